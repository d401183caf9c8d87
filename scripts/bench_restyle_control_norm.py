"""Benchmark clip-wide control maps (issue 15): depth and soft-edge maps rescaled per shot vs per frame.

The warping error of the maps themselves and of the restyle output, on bikes and carphone at 128 wide
(`control_norm_section`). Tiny random SD + ControlNet + DPT depth (`tests/tiny_diffusion.py`), CPU.

Prints one JSON line. Example:
    python scripts/bench_restyle_control_norm.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_restyle_common import make_parser, run_case, small_clip, warping_error


def control_maps_errors(make: Callable, images: list[np.ndarray], flows: list) -> dict[str, float]:
    """Warping error of one control's maps over a clip (frames one at a time, in order), their mean brightness, the
    mean frame-to-frame change of that brightness, and the error relative to the maps' mean square."""
    from v2v.frames import images_to_tensor, tensor_to_images

    maps = [make(images_to_tensor([image]))[0:1] for image in images]
    means = np.array([float(m.mean()) for m in maps])
    error, _ = warping_error([tensor_to_images(m)[0] for m in maps], images, flows)
    energy = float(np.mean([float(m.pow(2).mean()) for m in maps]))
    return {
        "warping_error": round(error, 6),
        "relative_warping_error": round(error / energy, 4),
        "mean": round(float(means.mean()), 4),
        "brightness_flicker": round(float(np.abs(np.diff(means)).mean() / means.mean()), 4),
    }


def exposure_flicker(images: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """The frames with a random exposure gain (0.7-1.3) each, as flickering footage has."""
    gains = np.random.default_rng(seed).uniform(0.7, 1.3, len(images))
    return [np.clip(image * gain, 0, 255).round().astype(np.uint8) for image, gain in zip(images, gains, strict=True)]


def blinking_light(images: list[np.ndarray]) -> list[np.ndarray]:
    """The frames with a small white light (a tenth of the width, near the top-left corner) on in every other one."""
    side = max(2, images[0].shape[1] // 10)
    out = [image.copy() for image in images]
    for image in out[1::2]:
        image[4 : 4 + side, 4 : 4 + side] = 255
    return out


MAP_GAIN = 2.5  # the conditioning embedding's weights, scaled so the tiny ControlNet follows its map


def map_sensitive_controlnet(models: Path, folder: Path) -> Path:
    """The tiny ControlNet with the convolutions of its conditioning embedding (all but the last) scaled by
    MAP_GAIN, saved to `folder`. At the default init the map changes the tiny ControlNet's residuals by ~0.1% (its
    effect is a near-constant bias, the same for any map); scaled by 2.5 the map's content moves them by tens of
    percent, as a trained ControlNet's do."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_pretrained(str(models / "controlnet"))
    with torch.no_grad():
        for name, parameter in net.controlnet_cond_embedding.named_parameters():
            if name.endswith("weight") and not name.startswith("conv_out"):
                parameter.mul_(MAP_GAIN)
    net.save_pretrained(str(folder))
    return folder


def control_norm_section(models: Path, args: argparse.Namespace) -> dict[str, object]:
    """Control maps rescaled per shot (`--control-norm shot`) against per frame, on real frames (`--norm-clips`):
    the warping error of the maps themselves (the Sobel soft edge, and depth from the tiny *random* DPT), on the clip
    as it is, with an exposure flicker added, and with a blinking light; then of the restyle output (tiny SD +
    `map_sensitive_controlnet`: temporal on, on without flow fusion, and off). Flow for the metric: DIS of the
    source clip as it is."""
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.control import make_control
    from v2v.diffusion.stage import RestyleStage
    from v2v.flow import make_flow_estimator

    dis = make_flow_estimator("dis")
    controls = {"softedge": "Sobel soft edge", "depth": "tiny RANDOM DPT (not a real depth model)"}
    named = {"softedge": "softedge-sobel", "depth": "depth"}  # the --control names (softedge alone is HED now)
    result: dict[str, object] = {"width": args.norm_width, "controls": controls, "controlnet_map_gain": MAP_GAIN}
    scratch = tempfile.TemporaryDirectory()
    controlnet = map_sensitive_controlnet(models, Path(scratch.name) / "controlnet")
    for spec in args.norm_clips.split(","):
        name, count = spec.split(":")
        frames = small_clip(name, int(count), args.norm_width)
        images = [frame.image for frame in frames]
        flows = [dis.pair(a, b) for a, b in zip(images, images[1:], strict=False)]
        height, width = images[0].shape[:2]
        clip: dict[str, object] = {"frames": len(images), "size": f"{width}x{height}"}
        footages = {"as_is": images, "exposure_flicker": exposure_flicker(images)}
        footages["blinking_light"] = blinking_light(images)
        for control in controls:
            for label, footage in footages.items():
                figures = {}
                for norm in ("frame", "shot"):
                    make = make_control(named[control], device="cpu", dtype=torch.float32,
                                        depth_model=str(models / "depth"), pose_model=None, norm=norm)  # fmt: skip
                    figures[norm] = control_maps_errors(make, footage, flows)
                figures["ratio_shot_vs_frame"] = round(
                    figures["shot"]["warping_error"] / figures["frame"]["warping_error"], 3
                )
                clip[f"{control}_maps_{label}"] = figures
        runs = (
            ("as_is", "softedge", "on", 0.7), ("as_is", "softedge", "on", 0.0), ("as_is", "softedge", "off", 0.7),
            ("as_is", "depth", "on", 0.7), ("blinking_light", "softedge", "on", 0.7),
            ("blinking_light", "softedge", "on", 0.0),
        )  # fmt: skip
        for label, control, temporal, fusion in runs:
            errors = {}
            for norm in ("frame", "shot"):
                config = RestyleConfig(
                    model=str(models / "sd"), controlnets=[str(controlnet)], controls=[named[control]],
                    depth_model=str(models / "depth"), control_norm=norm, prompt=args.prompt,
                    negative_prompt=args.negative_prompt, strength=args.strength, steps=args.steps,
                    guidance=args.guidance, seed=args.seed, temporal=temporal == "on", fusion=fusion,
                )  # fmt: skip
                began = time.perf_counter()
                given = [frame.with_image(image) for frame, image in zip(frames, footages[label], strict=True)]
                outputs = [frame.image for frame in RestyleStage(config).process(iter(given))]
                errors[norm] = warping_error(outputs, images, flows)[0]
                errors[f"{norm}_seconds"] = round(time.perf_counter() - began, 1)
            key = f"restyle_{label}_{control}_temporal_{temporal}" + ("_no_fusion" if not fusion else "")
            clip[key] = {
                "warping_error_frame": round(errors["frame"], 6),
                "warping_error_shot": round(errors["shot"], 6),
                "ratio_shot_vs_frame": round(errors["shot"] / errors["frame"], 3),
                "seconds_frame_shot": [errors["frame_seconds"], errors["shot_seconds"]],
            }
        result[name] = clip
    scratch.cleanup()
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 1)
    return result


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--norm-clips", default="bikes.mp4:40,carphone_pristine.mp4:40",
                        help="the clips, NAME:FRAMES,... (bikes has a cut at frame 30)")
    parser.add_argument("--norm-width", type=int, default=128, help="the frame width")
    run_case(parser.parse_args(), lambda models, clip, args: control_norm_section(models, args), "control_norm",
             model="tiny random SD + ControlNet + DPT depth (tests/tiny_diffusion.py), CPU")

if __name__ == "__main__":
    main()
