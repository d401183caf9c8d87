"""Video diffusion models: v2v's windowed stage against the family's own diffusers pipeline over the same frames in
one window, side by side in one run; prints one JSON line.

    PYTHONPATH=. python scripts/bench_video_models.py [--family wan|lucy_edit|animatediff|ltx] [--frames 9 17]
        [--size 64x48] [--steps 4] [--repeat 2]

Both are timed over `--frames` clips (each one window: `VideoModelStage` with `--window` = the clip's frames, and
the family's pipeline called once: `WanVideoToVideoPipeline`, `LucyEditPipeline`, `AnimateDiffVideoToVideoPipeline`,
`LTXConditionPipeline` after the VAE's encoding), and the per-frame rate is the marginal one between the shortest and
longest clip (start-up apart): (time(long) - time(short)) / (long - short frames). The model is the tests' tiny
random one (`tests/tiny_video.py`, `tests/tiny_video_families.py`: the real VAE compression), built here from config;
on a CPU a tiny model makes the VAE and v2v's own work (frame conversion, scene detection, streaming) weigh far more
than they do beside a real transformer, so the ratio is an upper bound of v2v's overhead.

The `projection` block is NOT a measurement: it scales published figures for Wan2.1-(VACE-)1.3B and LTX-Video 2B
to 480p on one H100 and adds what v2v's windows cost (the overlap's frames are denoised twice).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def projection(window: int = 81, overlap: int = 16) -> dict[str, object]:
    """Published figures scaled to one H100 at 480p, plus the windows' extra work: a labelled estimate."""
    extra = overlap / (window - overlap)  # frames denoised twice per new frame
    # Wan2.1 README: T2V-1.3B needs 8.19 GB and about 4 minutes for 5 s (81 frames) of 480p on an RTX 4090, 50 steps.
    # An H100 runs bf16 transformer work roughly 3x an RTX 4090 (dense bf16 tensor throughput ~990 vs ~330 TFLOPS
    # with sparsity counted for the 4090, ~165 without; measured DiT speedups are about 2.5-3.5x).
    wan_4090 = 240.0 / 81
    wan_h100 = wan_4090 / 3.0
    # LTX-Video README: faster than real time at 768x512 (24 fps) on an H100; 480p (832x480) is about as many pixels.
    ltx_h100 = 1 / 24
    return {
        "label": "PROJECTION from published figures, not measured here",
        "window": window, "overlap": overlap, "windows_extra_denoising": round(extra, 3),
        "wan2.1_vace_1.3b_480p_h100_s_per_frame_t2v_50_steps": round(wan_h100, 2),
        "wan2.1_vace_1.3b_480p_h100_s_per_frame_v2v_windows": round(wan_h100 * (1 + extra), 2),
        "wan2.1_1.3b_memory_gb_published": 8.19,
        "ltx_video_2b_480p_h100_s_per_frame_published": round(ltx_h100, 3),
        "ltx_video_2b_480p_h100_s_per_frame_v2v_windows": round(ltx_h100 * (1 + extra), 3),
        "v2v_windows_add": "the overlap denoised twice (overlap / (window - overlap)), one window state written per "
                           "window (VAE caches + tail latents), scene detection per frame; memory stays one window",
    }  # fmt: skip


def family_setup(family: str, folder: Path, width: int, height: int, steps: int) -> tuple[object, object]:
    """The family's tiny model as a RestyleConfig/EditConfig, and a function running its own pipeline over a list of
    (3, H, W) frames in [0, 1] (LTX: the VAE's encoding of them first, as its video-to-video takes latents)."""
    import torch
    from tiny_video import build_tiny_wan
    from tiny_video_families import build_tiny_ltx, build_tiny_lucy, build_tiny_motion_adapter

    from v2v.diffusion.config import EditConfig, RestyleConfig

    common = {"steps": steps, "window_overlap": 0}
    if family == "wan":
        config = RestyleConfig(model=str(build_tiny_wan(folder)), prompt="a watercolour", strength=0.75, **common)

        def run(pipe: object, video: list) -> None:
            pipe(video=video, prompt="a watercolour", height=height, width=width, num_inference_steps=steps,
                 strength=0.75, guidance_scale=config.guidance or 5.0, output_type="pt", max_sequence_length=16)
    elif family == "lucy_edit":
        config = EditConfig(model=str(build_tiny_lucy(folder)), instruction="make it red", **common)

        def run(pipe: object, video: list) -> None:
            pipe(video=video, prompt="make it red", height=height, width=width, num_frames=len(video),
                 num_inference_steps=steps, guidance_scale=5.0, output_type="pt", max_sequence_length=16)
    elif family == "animatediff":
        from tiny_diffusion import build_tiny_models

        sd = build_tiny_models(folder / "sd-models") / "sd"
        adapter = build_tiny_motion_adapter(folder, sd / "unet")
        config = RestyleConfig(model=str(sd), motion_adapter=str(adapter), prompt="a watercolour", strength=0.75,
                               **common)  # fmt: skip

        def run(pipe: object, video: list) -> None:
            pipe(video=video, prompt="a watercolour", height=height, width=width, num_inference_steps=steps,
                 strength=0.75, guidance_scale=7.5, output_type="pt")
    elif family == "ltx":
        config = RestyleConfig(model=str(build_tiny_ltx(folder)), prompt="a watercolour", strength=0.75, **common)

        def run(pipe: object, video: list) -> None:
            frames = torch.stack(video).permute(1, 0, 2, 3).unsqueeze(0) * 2 - 1
            moments = pipe.vae.encode(frames).latent_dist.mode()
            latents = pipe._normalize_latents(moments, pipe.vae.latents_mean, pipe.vae.latents_std)
            pipe(latents=latents, denoise_strength=0.75, prompt="a watercolour", height=height, width=width,
                 num_frames=len(video), num_inference_steps=steps, guidance_scale=3.0, output_type="pt",
                 max_sequence_length=16)
    else:
        raise SystemExit(f"unknown family {family!r}: wan, lucy_edit, animatediff or ltx")
    return config, run


FAMILY_FRAMES = {"wan": [9, 17], "lucy_edit": [9, 17], "animatediff": [8, 16], "ltx": [9, 17]}
FAMILY_SIZES = {"ltx": "96x64"}  # sides of 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="wan", choices=sorted(FAMILY_FRAMES))
    parser.add_argument("--frames", type=int, nargs="+", help="clip lengths, each one window (default by family)")
    parser.add_argument("--size", help="WxH (default 64x48; LTX 96x64)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    frames = args.frames or FAMILY_FRAMES[args.family]
    width, height = map(int, (args.size or FAMILY_SIZES.get(args.family, "64x48")).split("x"))

    import torch

    from v2v.diffusion.video_stage import VideoModelStage, WindowChain
    from v2v.diffusion.video_windows import WholeWindows
    from v2v.frames import Frame, images_to_tensor

    folder = Path(tempfile.mkdtemp(prefix=f"v2v-bench-{args.family}-"))
    config, run = family_setup(args.family, folder, width, height, args.steps)
    stage = VideoModelStage(dataclasses.replace(config, window=max(frames)))
    family, pipe = stage.family, stage.pipe
    rng = np.random.default_rng(0)
    times: dict[str, dict[int, float]] = {"v2v": {}, "diffusers": {}}
    for count in frames:
        images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]
        stage.window, stage.overlap = count, 0
        chain = WindowChain((count - 1) // family.temporal + 1, 0, stage._denoise)
        stage.chain = chain if family.streams else WholeWindows(stage, chain)
        video = list(images_to_tensor(images))
        best = {"v2v": float("inf"), "diffusers": float("inf")}
        for _ in range(args.repeat):  # alternated, best of each: the machine is shared
            began = time.perf_counter()
            out = list(stage.process(Frame(image, i, source_index=i, pts=i) for i, image in enumerate(images)))
            best["v2v"] = min(best["v2v"], time.perf_counter() - began)
            assert len(out) == count
            began = time.perf_counter()
            with torch.inference_mode():
                run(pipe, video)
            best["diffusers"] = min(best["diffusers"], time.perf_counter() - began)
        for name in best:
            times[name][count] = best[name]
    short, long = min(frames), max(frames)
    rate = {name: (t[long] - t[short]) / (long - short) for name, t in times.items()}
    print(json.dumps({
        "bench": "video_models", "family": args.family, "model": f"tiny random {family.title} (tests/tiny_video*.py)",
        "pipeline": type(pipe).__name__, "device": str(stage.device), "size": f"{width}x{height}",
        "steps": args.steps, "frames": frames,
        "seconds": {name: {str(k): round(v, 3) for k, v in t.items()} for name, t in times.items()},
        "v2v_s_per_frame": round(rate["v2v"], 4), "diffusers_s_per_frame": round(rate["diffusers"], 4),
        "ratio": round(rate["v2v"] / rate["diffusers"], 3), "projection": projection(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
