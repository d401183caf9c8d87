"""Benchmark `v2v restyle` with tiny FLUX + FLUX ControlNet against diffusers' `FluxControlNetImg2ImgPipeline` loop.

The marginal seconds per frame of the stage with temporal off vs the plain per-frame loop (two frame counts, so
loading and warm-up cancel out), whether their pixels are equal, and the warping error with temporal on vs off.
Tiny random FLUX.1-shaped transformer + FLUX ControlNet (`tests/tiny_dit.py`), Canny, CPU.

Prints one JSON line. Example:
    python scripts/bench_restyle_flux.py --marginal-frames 2 8 --rounds 3 --steps 4 --strength 0.5
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_restyle_common import flux_run, make_parser, read_frames, run_case, timed, warping_error


def flux_loop(models: Path, frames: list[np.ndarray], args: argparse.Namespace) -> Callable[[], list[np.ndarray]]:
    """The FLUX peer: diffusers' `FluxControlNetImg2ImgPipeline` called once per frame, as its docs show."""
    import cv2
    from diffusers import FluxControlNetImg2ImgPipeline, FluxControlNetModel
    from PIL import Image
    from tiny_dit import T5_TOKENS

    controlnet = FluxControlNetModel.from_pretrained(str(models / "flux-controlnet"))
    pipe = FluxControlNetImg2ImgPipeline.from_pretrained(str(models / "flux"), controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    height, width = (-(-side // 16) * 16 for side in frames[0].shape[:2])  # FLUX takes multiples of 16

    def one(index: int, image: np.ndarray) -> np.ndarray:
        edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
        result = pipe(
            prompt=args.prompt,
            image=Image.fromarray(image),
            control_image=Image.fromarray(np.stack([edges] * 3, axis=-1)),
            height=height,
            width=width,
            strength=args.strength,
            num_inference_steps=args.steps,
            guidance_scale=args.flux_guidance,
            generator=torch.Generator("cpu").manual_seed(args.seed + index),
            controlnet_conditioning_scale=1.0,
            max_sequence_length=T5_TOKENS,
            output_type="np",
        ).images[0]
        return (result * 255).round().astype(np.uint8)

    return lambda: [one(i, image) for i, image in enumerate(frames)]


def case_flux(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """Tiny FLUX + FLUX ControlNet (tests/tiny_dit.py) on real frames: the marginal seconds per frame of the stage
    with temporal off vs a plain `FluxControlNetImg2ImgPipeline` loop (runs on `--marginal-frames` A and B frames,
    interleaved, fastest of `--rounds`, so loading and warm-up cancel out), and the warping error on vs off."""
    from tiny_dit import build_tiny_flux

    from v2v.flow import make_flow_estimator

    few, many = args.marginal_frames
    frames = read_frames(clip, many)
    sources = [frame.image for frame in frames]
    with tempfile.TemporaryDirectory() as scratch:
        flux = build_tiny_flux(Path(scratch) / "tiny-flux")
        runs: dict[str, Callable[[], list[np.ndarray]]] = {}
        for count in (few, many):
            runs[f"peer{count}"] = flux_loop(flux, sources[:count], args)
            runs[f"off{count}"] = flux_run(flux, frames[:count], args, temporal=False)
        best = timed(runs, args.rounds, alternate=True)
        on = flux_run(flux, frames[:many], args, temporal=True)()
    peer = (best[f"peer{many}"][0] - best[f"peer{few}"][0]) / (many - few)
    off = (best[f"off{many}"][0] - best[f"off{few}"][0]) / (many - few)
    # CPU seconds of the same runs: steadier than wall time when the machine is shared
    peer_cpu = (best[f"peer{many}"][1] - best[f"peer{few}"][1]) / (many - few)
    off_cpu = (best[f"off{many}"][1] - best[f"off{few}"][1]) / (many - few)
    dis = make_flow_estimator("dis")
    flows = [dis.pair(a, b) for a, b in zip(sources, sources[1:], strict=False)]
    error_off, masked = warping_error(best[f"off{many}"][2], sources, flows)
    error_on, _ = warping_error(on, sources, flows)
    error_peer, _ = warping_error(best[f"peer{many}"][2], sources, flows)
    height, width = sources[0].shape[:2]
    return {
        "model": "tiny random FLUX.1-shaped transformer + FLUX ControlNet (tests/tiny_dit.py), Canny, CPU",
        "size": f"{width}x{height}",
        "marginal_frames": [few, many],
        "peer": "FluxControlNetImg2ImgPipeline, one call per frame",
        "peer_seconds": {str(n): round(best[f"peer{n}"][0], 2) for n in (few, many)},
        "v2v_off_seconds": {str(n): round(best[f"off{n}"][0], 2) for n in (few, many)},
        "peer_marginal_seconds_per_frame": round(peer, 3),
        "v2v_off_marginal_seconds_per_frame": round(off, 3),
        "marginal_ratio_off_vs_peer": round(off / peer, 3),
        "peer_marginal_cpu_seconds_per_frame": round(peer_cpu, 3),
        "v2v_off_marginal_cpu_seconds_per_frame": round(off_cpu, 3),
        "marginal_cpu_ratio_off_vs_peer": round(off_cpu / peer_cpu, 3),
        "off_equals_peer_pixels": max_abs_diff(best[f"off{many}"][2], best[f"peer{many}"][2]) == 0,
        "warping_error_peer": round(error_peer, 6),
        "warping_error_off": round(error_off, 6),
        "warping_error_on": round(error_on, 6),
        "warping_ratio_on_vs_off": round(error_on / error_off, 3),
        "masked_fraction": round(masked, 3),
    }


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


def main() -> None:
    args = make_parser(__doc__, "marginal_frames", "flux_guidance").parse_args()
    run_case(args, case_flux, "flux", sd_models=False)

if __name__ == "__main__":
    main()
