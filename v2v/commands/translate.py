"""`v2v translate IN -o OUT --model NAME|PATH`: a pix2pix / CycleGAN generator on every frame, steady over time."""

from __future__ import annotations

import argparse

from v2v.commands.common import add_io_arguments, run_pipeline
from v2v.commands.stylize import add_frame_arguments, frame_options

HELP = "image-to-image translation with a pix2pix or CycleGAN generator (named, or any .pth), steady over time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    parser.add_argument("--model", "-m", default="cyclegan-vintage", metavar="NAME|PATH",
                        help="a translate model (`v2v models --task translate`) or a generator checkpoint: ResNet "
                        "(6/9 blocks, junyanz or vintagify layout) or U-Net (default %(default)s)")
    add_frame_arguments(parser, fusion=0.0)  # a CycleGAN keeps its detail with the anchor alone


def build_stages(args: argparse.Namespace) -> list[object]:
    from v2v.errors import require

    require("torch", "style")
    from v2v.stylize.stage import TranslateStage

    return [TranslateStage(args.model, frame_options(args))]  # type: ignore[arg-type]


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, lambda: build_stages(args))  # type: ignore[arg-type,return-value]
    return 0
