"""Benchmark latent flow fusion on vs off in `v2v restyle`, for tiny SD and tiny FLUX, on real frames.

Warping error ratio (with pixel flow fusion on and off), sharpness, time, and the fusion's own seconds per frame,
for tiny SD + Canny ControlNet (`tests/tiny_diffusion.py`) and tiny FLUX + FLUX ControlNet (`tests/tiny_dit.py`), on
bikes and carphone scaled to `--latent-width`; CPU.

Prints one JSON line. Example:
    python scripts/bench_restyle_latent.py --frames 12 --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_restyle_common import (
    bikes_clip,
    flux_run,
    make_parser,
    read_frames,
    run_case,
    small_clip,
    timed,
    v2v_run,
    warping_error,
)


def sharpness(images: list[np.ndarray]) -> float:
    """Mean absolute Laplacian of the frames' luma: falls when an output is smeared."""
    import cv2

    lumas = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images]
    return float(np.mean([np.abs(cv2.Laplacian(luma, cv2.CV_32F)).mean() for luma in lumas]))


@contextlib.contextmanager
def latent_fusion_clock() -> Iterator[list[float]]:
    """Seconds spent inside latent fusion (its flow and trust per frame, its step callbacks), summed while open."""
    from v2v.diffusion.latent_fusion import LatentFusion

    spent = [0.0]

    def clocked(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - began

        return run

    link, callback = LatentFusion._link, LatentFusion._callback
    LatentFusion._link = clocked(link)  # type: ignore[method-assign]
    LatentFusion._callback = lambda self, *a: clocked(callback(self, *a))  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        LatentFusion._link, LatentFusion._callback = link, callback  # type: ignore[method-assign]


def case_latent(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """Latent flow fusion on vs off, for the tiny SD (+ Canny ControlNet) and the tiny FLUX (+ FLUX ControlNet), on
    `--latent-clips` scaled to `--latent-width`: warping error of temporal on with latent fusion at each of
    `--latent-weights` x `--latent-steps`, over the same with latent fusion off, with pixel flow fusion on (0.7, the
    default) and off; the sharpness of the output over latent fusion off's (below 1: smeared); and the wall time of
    the first weight and share against off, pixel fusion on (interleaved, fastest of `--rounds`)."""
    from tiny_dit import build_tiny_flux

    from v2v.flow import make_flow_estimator

    weights = [float(w) for w in args.latent_weights.split(",")]
    shares = [float(f) for f in args.latent_steps.split(",")]
    dis = make_flow_estimator("dis")
    figures: dict[str, object] = {"weights": weights, "step_shares": shares, "width": args.latent_width}
    with tempfile.TemporaryDirectory() as scratch:
        flux = build_tiny_flux(Path(scratch) / "tiny-flux")
        families = {"sd": (v2v_run, models), "flux": (flux_run, flux)}
        for name in args.latent_clips.split(","):
            frames = small_clip(name, args.frames, args.latent_width)
            sources = [frame.image for frame in frames]
            flows = [dis.pair(a, b) for a, b in zip(sources, sources[1:], strict=False)]
            for family, (make, folder) in families.items():
                row: dict[str, object] = {}
                error_off, _ = warping_error(make(folder, frames, args, temporal=False)(), sources, flows)
                row["warping_error_temporal_off"] = round(error_off, 6)
                for pixel in (0.7, 0.0):
                    plain = make(folder, frames, args, fusion=pixel, latent_fusion=0.0)()
                    error, base_sharpness = warping_error(plain, sources, flows)[0], sharpness(plain)
                    row[f"pixel_{pixel}"] = {"warping_error_latent_off": round(error, 6)}
                    for weight in weights:
                        for share in shares:
                            out = make(folder, frames, args, fusion=pixel, latent_fusion=weight,
                                       latent_fusion_steps=share)()  # fmt: skip
                            on = warping_error(out, sources, flows)[0]
                            row[f"pixel_{pixel}"][f"latent_{weight}_steps_{share}"] = {  # type: ignore[index]
                                "warping_error": round(on, 6),
                                "ratio_latent_on_vs_off": round(on / error, 3),
                                "sharpness_vs_latent_off": round(sharpness(out) / base_sharpness, 3),
                            }
                runs = {
                    "latent_off": make(folder, frames, args, latent_fusion=0.0),
                    "latent_on": make(folder, frames, args, latent_fusion=weights[0], latent_fusion_steps=shares[0]),
                }
                with latent_fusion_clock() as spent:
                    best = timed(runs, args.rounds, alternate=True)
                (off_seconds, off_cpu, _), (on_seconds, on_cpu, _) = best["latent_off"], best["latent_on"]
                count = len(frames)
                row["seconds_per_frame_latent_off"] = round(off_seconds / count, 3)
                row["seconds_per_frame_latent_on"] = round(on_seconds / count, 3)
                row["time_ratio_latent_on_vs_off"] = round(on_seconds / off_seconds, 3)
                row["cpu_ratio_latent_on_vs_off"] = round(on_cpu / off_cpu, 3)
                # the latent fusion's own work (flow, trust, warps and blends), summed over the latent_on runs
                row["latent_fusion_own_seconds_per_frame"] = round(spent[0] / (count * (args.rounds + 1)), 4)
                figures[f"{name}/{family}"] = row
    figures["size"] = "x".join(map(str, sources[0].shape[1::-1]))
    figures["own_seconds_per_frame_512x512"] = latent_fusion_cost(args)
    figures["load_average_1min_at_end"] = round(os.getloadavg()[0], 1)
    return figures


def latent_fusion_cost(args: argparse.Namespace) -> dict[str, float]:
    """Latent fusion's own work for one 512x512 frame (bikes, cropped): the source flow and trust, and the blend of
    SD's (1, 4, 64, 64) and FLUX's packed (1, 1024, 64) latents at every step of `--steps` x `--strength`
    (fastest of 5)."""
    import cv2

    from v2v.diffusion.latent_fusion import LatentFusion
    from v2v.diffusion.registry import lookup

    images = [cv2.resize(f.image[:, 64:336], (512, 512)) for f in read_frames(bikes_clip(), 2)]
    steps = max(1, int(args.steps * args.strength))
    pipe = type("Pipe", (), {"num_timesteps": steps, "vae_scale_factor": 8})()
    figures = {}
    for name, shape in (("sd", (1, 4, 64, 64)), ("flux", (1, 1024, 64))):
        best = float("inf")
        for _ in range(5):
            fusion = LatentFusion(lookup(name), 0.5, 1.0, torch.device("cpu"))  # nothing remembered
            latents = [torch.randn(shape) for _ in range(steps)]
            step = fusion.arguments(images[:1], [0], [False], (512, 512), (512, 512))["callback_on_step_end"]
            for i in range(steps):  # the first frame: its latents are kept for the next
                step(pipe, i, None, {"latents": latents[i]})
            fusion.finish()
            began = time.perf_counter()
            step = fusion.arguments(images[1:], [1], [False], (512, 512), (512, 512))["callback_on_step_end"]
            for i in range(steps):
                step(pipe, i, None, {"latents": latents[i]})
            best = min(best, time.perf_counter() - began)
        figures[name] = round(best, 4)
    return figures


def main() -> None:
    parser = make_parser(__doc__, "frames", "flux_guidance")
    parser.add_argument("--latent-clips", default="bikes.mp4,carphone_pristine.mp4", help="clips")
    parser.add_argument("--latent-width", type=int, default=128, help="frame width (default 128)")
    parser.add_argument("--latent-weights", default="0.5,0.8", help="latent fusion weights")
    parser.add_argument("--latent-steps", default="0.75,0.5,1.0", help="shares of the steps that blend")
    run_case(parser.parse_args(), case_latent, "latent")

if __name__ == "__main__":
    main()
