"""`v2v stylize IN -o OUT (--style N[,M:w...] | --style-image PAINTING)`: fast style transfer, steady over time."""

from __future__ import annotations

import argparse

from v2v.commands.common import add_io_arguments, at_least, run_pipeline

HELP = "fast neural style transfer (26 built-in styles or any painting), steady from frame to frame"


def add_frame_arguments(parser: argparse.ArgumentParser, fusion: float = 0.9) -> None:
    """The options `stylize` and `translate` share (`fusion`: the default feature fusion)."""
    group = parser.add_argument_group("frames")
    group.add_argument("--max-size", type=at_least(int, 32, "pixels"), default=None, metavar="PX",
                       help="run the network at most this many pixels on the longer side, the result scaled back "
                       "to the frame's size (default: the frame's own size)")
    group.add_argument("--temporal", choices=("on", "off"), default="on",
                       help="on: the network's features follow the source's motion, so the texture stays on the "
                       "scene instead of flickering; off: every frame on its own (default %(default)s)")
    group.add_argument("--fusion", type=at_least(float, 0, "a weight", 1), default=fusion,
                       help="temporal on: how far trusted features lean on the previous frame's, 0-1 "
                       "(default %(default)s)")
    group.add_argument("--flow", choices=("raft", "dis"), default="raft",
                       help="the source's flow for temporal fusion: raft (steadiest; seconds a frame on a CPU at "
                       "640 px) or dis (fast, about 3x the flicker left) (default %(default)s)")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    style = parser.add_argument_group("style")
    which = style.add_mutually_exclusive_group()
    which.add_argument("--style", default=None, metavar="N|N:w,M:w",
                       help="a built-in style 0-25, or a blend such as 3:0.5,12:0.5 (default 0); all: a sheet of "
                       "the 26 to choose from (`v2v preview IN --height 800 stylize --style all`)")
    which.add_argument("--style-image", default=None, metavar="PAINTING",
                       help="any picture as the style (Ghiasi et al.'s arbitrary network)")
    style.add_argument("--method", choices=("network", "optimize"), default="network",
                       help="network: a feed-forward style network (fast); optimize: Gatys et al.'s optimisation "
                       "on VGG19 with Ruder et al.'s temporal loss, for --style-image (slow: seconds to minutes a "
                       "frame; cap it with --max-size) (default %(default)s)")
    style.add_argument("--iterations", type=at_least(int, 1, "a whole number"), default=100, metavar="N",
                       help="--method optimize: L-BFGS iterations a frame (default %(default)s)")
    style.add_argument("--temporal-weight", type=at_least(float, 0, "a weight"), default=20000.0, metavar="W",
                       help="--method optimize, temporal on: weight of the loss that holds each frame to the previous "
                       "result moved by the flow (default %(default)g)")
    style.add_argument("--strength", type=at_least(float, 0, "a strength", 1), default=1.0,
                       help="mix with the frame, 0-1 (default %(default)s)")
    style.add_argument("--preserve-colour", "--preserve-color", action="store_true",
                       help="keep the frame's colours, take only the style's light and texture")
    add_frame_arguments(parser)


def frame_options(args: argparse.Namespace, strength: float = 1.0, preserve_colour: bool = False) -> object:
    from v2v.stylize.stage import FrameOptions
    from v2v.stylize.temporal import TemporalConfig

    return FrameOptions(strength=strength, preserve_colour=preserve_colour, max_size=args.max_size,
                        temporal=args.temporal == "on",
                        fusion=TemporalConfig(feature_weight=args.fusion, flow=args.flow), device=args.device)


def build_stages(args: argparse.Namespace) -> list[object]:
    from v2v.errors import require

    require("torch", "style")
    from v2v.stylize.stage import StylizeConfig, StylizeStage

    options = frame_options(args, args.strength, args.preserve_colour)
    if args.method == "optimize":
        from v2v.stylize.optimize import OptimizeConfig, OptimizeStyleStage

        if args.style is not None:
            from v2v.errors import ParameterError

            raise ParameterError("style", "is the network method's; the optimize method takes a painting")
        return [OptimizeStyleStage(OptimizeConfig(style_image=args.style_image, iterations=args.iterations,
                                                  temporal_weight=args.temporal_weight, options=options))]
    style = None if args.style_image else (args.style or "0")
    config = StylizeConfig(style=style, style_image=args.style_image,
                           options=options)  # type: ignore[arg-type]
    return [StylizeStage(config)]


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, lambda: build_stages(args))  # type: ignore[arg-type,return-value]
    return 0
