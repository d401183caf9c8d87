"""A mask carried by flow on the bundled sample's fast ball (issue 27); prints one JSON line.

The ball's true mask of frame 0 (samples/make_sample.py --truth-masks) is carried through the 72 frames of the
sample, by flow alone (`PropagatedMask(..., reanchor=False)`, the carrier before issue 27) and with re-anchoring on
the object's appearance (the default); IoU per frame against the true ball. Then `v2v inpaint` removes the ball with
each carried mask (flow fill + Telea) and the red left is counted: the fraction of pixels within the true ball
(grown by 3 pixels) that are still ball-red, over all frames.

    PYTHONPATH=$PWD python scripts/bench_mask.py [--work bench_work/mask]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "samples")]

BALL_RED = np.array([235, 70, 50])


def carry(sample: Path, drawn: Path, folder: Path, reanchor: bool) -> tuple[list[np.ndarray], float]:
    """Every frame's carried mask (bool), also written to folder/%05d.png; and the seconds it took."""
    import cv2

    from v2v.inpaint.propagate import PropagatedMask

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    masks = PropagatedMask(sample, drawn, 0, reanchor=reanchor)
    try:
        got = [mask >= 0.5 for _, mask in masks.masks()]
    finally:
        masks.close()
    seconds = time.perf_counter() - start
    for index, mask in enumerate(got):
        cv2.imwrite(str(folder / f"{index:05d}.png"), mask.astype(np.uint8) * 255)
    return got, seconds


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def red_left(video: Path, truths: list[np.ndarray]) -> float:
    """The fraction of pixels within the true ball grown by 3 pixels that are ball-red in `video`."""
    import cv2

    from v2v.io.reader import open_source

    red = total = 0
    with open_source(video) as reader:
        for frame, truth in zip(reader, truths, strict=True):
            near = cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            close = np.abs(frame.image[near].astype(np.int32) - BALL_RED).max(axis=1) < 60
            red, total = red + int(close.sum()), total + int(near.sum())
    return red / total


def inpaint(sample: Path, mask: str, out: Path) -> Path:
    from v2v import cli

    if cli.main(["inpaint", str(sample), "-o", str(out), "--mask", mask, "--codec", "ffv1", "--no-progress"]) != 0:
        raise SystemExit(f"v2v inpaint failed with --mask {mask}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench_work" / "mask")
    args = parser.parse_args()
    import make_sample

    args.work.mkdir(parents=True, exist_ok=True)
    sample = make_sample.render(args.work / "sample.mp4")
    truth_folder = make_sample.write_truth_masks(args.work / "truth")
    truths = [make_sample.ball_mask(index) for index in range(make_sample.FPS * make_sample.SECONDS)]
    drawn = truth_folder / "00000.png"
    result: dict[str, object] = {"clip": "samples/sample.mp4 (72 frames, ball radius 22, up to 12 px/frame)",
                                 "red_in_source": round(red_left(sample, truths), 4),
                                 "red_left_with_true_masks": round(red_left(
                                     inpaint(sample, str(truth_folder / "%05d.png"), args.work / "truth.mkv"),
                                     truths), 4)}
    for name, reanchor in (("flow_only", False), ("reanchored", True)):
        masks, seconds = carry(sample, drawn, args.work / name, reanchor)
        scores = [iou(mask, truth) for mask, truth in zip(masks, truths, strict=True)]
        # the carried masks as a sequence: the same masks `v2v inpaint --mask drawn.png` would carry itself
        left = red_left(inpaint(sample, str(args.work / name / "%05d.png"), args.work / f"{name}.mkv"), truths)
        result[name] = {"iou_mean": round(float(np.mean(scores)), 3), "iou_min": round(min(scores), 3),
                        "frames_below_0.5": sum(score < 0.5 for score in scores),
                        "first_below_0.5": next((i for i, score in enumerate(scores) if score < 0.5), None),
                        "carry_s": round(seconds, 2), "inpaint_red_left": round(left, 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
