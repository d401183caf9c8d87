"""`v2v restyle IN -o OUT --model M --prompt P ...`: Stable Diffusion img2img over a video, held by ControlNet,
styled by a prompt and/or an IP-Adapter reference, kept steady by cross-frame attention and flow fusion."""

from __future__ import annotations

import argparse
import os

from v2v.commands.common import add_io_arguments, run_pipeline

HELP = "restyle a video with Stable Diffusion (ControlNet, IP-Adapter, temporal consistency)"

CONTROL_CHOICES = "canny|softedge|tile|depth|pose|VIDEO"
SCHEDULER_CHOICES = ("ddim", "pndm", "euler", "euler-a", "dpm++", "unipc", "lcm", "tcd", "turbo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    parser.add_argument("--recipe", help="TOML file with these settings (options given here win)")
    model = parser.add_argument_group("models (folders, single files, or hub ids already in the local cache)")
    model.add_argument("--model", help="base model: diffusers folder, .safetensors checkpoint, or cached hub id")
    model.add_argument("--model-config", help="diffusers configs for a single-file checkpoint (folder or hub id)")
    model.add_argument("--controlnet", action="append", help="a ControlNet (repeat for several)")
    model.add_argument(
        "--control",
        action="append",
        metavar=CONTROL_CHOICES,
        help="what conditions each ControlNet, in order (default canny); a path gives precomputed maps",
    )
    model.add_argument("--control-scale", type=float, action="append", help="ControlNet strength (one, or one each)")
    model.add_argument("--depth-model", help="transformers depth model for --control depth")
    model.add_argument("--pose-model", help="transformers ViTPose model for --control pose (one person a frame)")
    model.add_argument("--ip-adapter", metavar="REF.png", help="reference image whose look the IP-Adapter carries over")
    model.add_argument("--ip-adapter-model", help="IP-Adapter weights (default h94/IP-Adapter's ip-adapter_sd15)")
    model.add_argument(
        "--image-encoder", help="the IP-Adapter's CLIP image encoder (default: found beside the weights)"
    )
    model.add_argument("--ip-adapter-scale", type=float, help="IP-Adapter strength (default 0.6)")
    model.add_argument("--lora", help="LoRA weights (file or folder), fused into the model")
    model.add_argument("--lora-scale", type=float, help="LoRA strength (default 1.0)")
    model.add_argument("--scheduler", choices=SCHEDULER_CHOICES, help="sampler (lcm/tcd/turbo for few-step models)")
    look = parser.add_argument_group("the look")
    look.add_argument("--prompt", help="what the result should look like")
    look.add_argument("--negative-prompt", help="what it should not look like")
    look.add_argument("--strength", type=float, help="how far from the frame to go, 0-1 (default 0.5)")
    look.add_argument("--steps", type=int, help="denoising steps before strength (default 20)")
    look.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 7.5)")
    look.add_argument("--seed", type=int, help="noise seed (default 0)")
    time = parser.add_argument_group("temporal consistency")
    time.add_argument(
        "--temporal",
        choices=("on", "off"),
        help="on (default): shared noise, cross-frame attention and flow fusion; off: plain per-frame img2img",
    )
    time.add_argument(
        "--keyframe-every", type=int, metavar="K", help="diffuse every K-th frame, carry the look between"
    )
    time.add_argument(
        "--bank-tokens",
        type=int,
        metavar="N",
        help="keep at most N tokens a frame in the cross-frame attention bank "
        "(strided; bounds its memory, ~1.9 GB for SD 1.5 at 512x512 and 10 steps in fp16 without it)",
    )
    time.add_argument("--fusion", type=float, help="weight of the flow-warped previous output, 0-1 (default 0.7)")
    speed = parser.add_argument_group("speed and memory")
    speed.add_argument("--batch-size", type=int, help="frames per UNet call (default 1)")
    speed.add_argument("--max-side", type=int, help="diffuse at most this many pixels on the longer side")
    speed.add_argument("--attention-slicing", action="store_true", default=None, help="less memory, a bit slower")
    speed.add_argument("--vae-tiling", action="store_true", default=None, help="decode large frames in tiles")
    speed.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda when there is one)")
    speed.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), help="default float16 on CUDA")
    speed.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the cores less one, as decoding and encoding run beside)",
    )


# CLI option -> RestyleConfig field, for the options whose names differ
_RENAMED = {"controlnet": "controlnets", "control": "controls", "control_scale": "control_scales"}


def config_from_args(args: argparse.Namespace) -> object:
    """The RestyleConfig the options (and recipe) describe."""
    import dataclasses

    from v2v.diffusion.config import RestyleConfig

    fields = {field.name for field in dataclasses.fields(RestyleConfig)}
    values = {}
    for name, value in vars(args).items():
        field = _RENAMED.get(name, name)
        if field in fields and value is not None:
            values[field] = value
    if "temporal" in values:
        values["temporal"] = values["temporal"] == "on"
    if args.recipe:
        return RestyleConfig.from_toml(args.recipe, **values)
    return RestyleConfig(**values)


class StageFactory:
    """Builds the restyle stage once per process and hands it out again (each `process` call starts
    afresh). Segmented runs call it per segment; pickled for a Ray worker it carries only the config."""

    def __init__(self, config: object) -> None:
        self.config = config
        self.stage: object | None = None

    def __call__(self) -> list[object]:
        if self.stage is None:
            from v2v.diffusion.stage import RestyleStage

            self.stage = RestyleStage(self.config)  # type: ignore[arg-type]
        return [self.stage]

    def __getstate__(self) -> dict[str, object]:
        return {"config": self.config, "stage": None}


def main(args: argparse.Namespace) -> int:
    from v2v.diffusion.stage import quiet_loading

    quiet_loading()
    # torch's CPU threads compete with the decoder and encoder threads; oversubscribed, they spin and can be
    # ten times slower than one fewer
    import torch

    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    stages = StageFactory(config_from_args(args))
    stages()  # load the models now: a missing one fails before any frame is decoded
    run_pipeline(args, stages)  # type: ignore[arg-type]
    return 0
