"""`v2v denoise IN -o OUT [--sigma S|auto] [--temporal on|off]`: FFDNet denoising, audio and timing kept."""

from __future__ import annotations

import argparse

from v2v.commands.common import add_io_arguments, run_pipeline

HELP = "denoise a video with FFDNet (noise level given or estimated per shot), steady over time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    model = parser.add_argument_group("denoising")
    model.add_argument("--sigma", default="auto", metavar="S|auto",
                       help="noise level on the 0-255 scale, in (0, 75], or auto: estimated for each shot from "
                       "its first frames (default %(default)s)")
    model.add_argument("--temporal", choices=("on", "off"), default="on",
                       help="on: average the noisy frames along their motion before FFDNet, so the residual "
                       "noise does not flicker; off: FFDNet frame by frame (default %(default)s)")
    model.add_argument("--model", "-m", default="ffdnet-color", help="a denoise model (default %(default)s)")
    model.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    model.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                       help="compute precision (default auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32)")


def build_stages(args: argparse.Namespace) -> list[object]:
    """The denoise stage the options describe (the sigma is checked before anything heavy loads)."""
    from v2v.errors import require
    from v2v.restore.denoise import DenoiseStage, parse_sigma

    sigma = parse_sigma(args.sigma)
    require("torch", "restore")
    return [DenoiseStage(sigma, args.temporal == "on", device=args.device, dtype=args.dtype, model=args.model)]


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, lambda: build_stages(args))  # type: ignore[arg-type,return-value]
    return 0
