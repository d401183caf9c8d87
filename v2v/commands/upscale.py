"""`v2v upscale IN -o OUT --model NAME|PATH`: super-resolution of every frame, audio and timing kept."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from v2v.commands.common import add_io_arguments, positive_int, run_pipeline
from v2v.sr.models import NAMED_MODELS  # light: torch is imported only when a model loads

if TYPE_CHECKING:
    from v2v.pipeline import Stage

HELP = "upscale a video with a super-resolution model (named Real-ESRGAN models or any spandrel checkpoint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", "-m", default="realesr-animevideov3-x2",
        help=f"a named model ({', '.join(NAMED_MODELS)}; see `v2v models`) or a checkpoint file "
        "(.pth/.safetensors of any architecture spandrel knows, or an ncnn .param); default %(default)s",
    )  # fmt: skip
    model.add_argument("--scale", type=float, default=None,
                       help="output scale >= 1 (default: the model's); at most the network's own scale")
    model.add_argument("--tile", type=int, default=None, metavar="N",
                       help="tile size in input pixels (0: never tile; default: automatic from free memory)")
    model.add_argument("--batch", type=positive_int, default=1, metavar="N", help="frames per batch (default 1)")
    model.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    model.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16", "int8"),
                       help="compute precision (default auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32); "
                       "int8: quantized on the CPU, calibrated on the first frames (fastest there, less exact)")
    model.add_argument("--calibration-frames", type=positive_int, default=2, metavar="N",
                       help="with --dtype int8: frames with detail to calibrate on, run in float32 (default 2)")


def build_stages(args: argparse.Namespace) -> list[Stage]:
    """The upscale stage the options describe (its model loads now)."""
    from v2v.errors import require

    torch = require("torch", "torch")
    from v2v.sr.upscale import UpscaleStage

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")  # type: ignore[attr-defined]
    stage = UpscaleStage(
        args.model, batch_size=args.batch, device=device, dtype=args.dtype, tile=args.tile, scale=args.scale,
        calibration_frames=args.calibration_frames,
    )  # fmt: skip
    return [stage]


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, stages=build_stages(args))
    return 0
