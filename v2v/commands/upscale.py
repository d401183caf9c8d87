"""`v2v upscale IN -o OUT --model NAME|PATH`: super-resolution of every frame, audio and timing kept.

A named model is looked up in the restore registry: single-image models (task "sr": Real-ESRGAN, Real-CUGAN,
SPAN) run frame by frame through `v2v.restore.upscale`; video models (task "video-sr": BasicVSR) run in windows
of frames through `v2v.restore.video_sr`. Anything else is a checkpoint file.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from v2v.commands.common import add_io_arguments, positive_int, run_pipeline

if TYPE_CHECKING:
    from v2v.pipeline import Stage

HELP = "upscale a video with a super-resolution model (a named model, see `v2v models`, or any spandrel checkpoint)"
VIDEO_TASK = "video-sr"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", "-m", default="realesr-animevideov3-x2",
        help="a named model (Real-ESRGAN, Real-CUGAN, SPAN, BasicVSR ...; `v2v models` lists them; a name without "
        "its scale takes --scale: realesr-animevideov3 --scale 2) or a checkpoint file (.pth/.safetensors of any "
        "architecture spandrel knows, or an ncnn .param); default %(default)s",
    )  # fmt: skip
    model.add_argument("--scale", type=float, default=None,
                       help="output scale >= 1 (default: the model's); at most the network's own scale")
    model.add_argument("--tile", type=int, default=None, metavar="N",
                       help="tile size in input pixels (0: never tile; default: chosen from free memory on the "
                       "first frame of each size, then kept)")
    model.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="frames per batch (default 1)")
    model.add_argument("--batch", type=positive_int, dest="batch_size", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # the old name
    model.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    model.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16", "int8"),
                       help="compute precision (default auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32); "
                       "int8: quantized on the CPU, calibrated on the first frames (fastest there, less exact)")
    model.add_argument("--calibration-frames", type=positive_int, default=2, metavar="N",
                       help="with --dtype int8: frames with detail to calibrate on, run in float32 (default 2)")
    model.add_argument("--compile", action="store_true",
                       help="torch.compile the single-image SR network (the first frame is slow while it compiles)")


def _video_model(name: str) -> object | None:
    """The registry's video-sr model called `name`, or None (a single-image model or a file)."""
    from v2v.restore import registry

    if registry.is_named(name):
        model = registry.lookup(name)
        if model.task == VIDEO_TASK:
            return model
    return None


def video_stage(args: argparse.Namespace, model: object) -> object:
    """The stage for a video SR model, after refusing the options that only single-image models take."""
    from v2v.errors import UsageError
    from v2v.restore.video_sr import VideoSRStage  # imported here: only video models need it

    name = model.name  # type: ignore[attr-defined]
    if args.tile not in (None, 0):
        raise UsageError(f"{name} is a video model: it runs whole frames in windows of frames, so --tile "
                         f"{args.tile} cannot apply; leave --tile out")
    if args.dtype == "int8":
        raise UsageError(f"--dtype int8 is for single-image models; {name} runs in fp32, bf16 or fp16")
    if args.compile:  # its steps run on shapes that change with the window: nothing to gain, recompiles to lose
        raise UsageError(f"--compile is for single-image models; {name} runs uncompiled: leave --compile out")
    scale = model.scale  # type: ignore[attr-defined]
    if args.scale is not None and abs(args.scale - scale) > 1e-9:
        raise UsageError(f"{name} upscales x{scale:g} only; leave --scale out or choose a single-image model")
    return VideoSRStage(model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)  # type: ignore[arg-type]


def build_stages(args: argparse.Namespace) -> list[Stage]:
    """The upscale stage the options describe (its model loads now)."""
    from v2v.devices import resolve_device

    device = resolve_device(args.device)
    video = _video_model(args.model)
    if video is not None:
        stage = video_stage(args, video)
    else:
        from v2v.restore.upscale import UpscaleStage

        stage = UpscaleStage(
            args.model, batch_size=args.batch_size, device=device, dtype=args.dtype, tile=args.tile, scale=args.scale,
            calibration_frames=args.calibration_frames, compile=args.compile,
        )  # fmt: skip
    return [stage]  # type: ignore[list-item]


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, stages=build_stages(args))
    return 0
