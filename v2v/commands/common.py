"""Options every processing command shares, and the one way each command runs its pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from v2v.pipeline import RunReport, Stage


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT, -o OUTPUT, the time window, --overwrite and the encoder settings."""
    parser.add_argument("input", help="video file, image folder, or pattern such as frames/%%05d.png")
    parser.add_argument("-o", "--output", required=True, help="video file, or pattern such as out/%%05d.png")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    window = parser.add_argument_group("which frames")
    window.add_argument("--start", type=_seconds, default=0.0, help="start at this time (seconds)")
    window.add_argument("--end", type=_seconds, default=None, help="stop before this time (seconds)")
    window.add_argument("--max-frames", type=_positive_int, default=None, metavar="N", help="process at most N frames")
    encoding = parser.add_argument_group("encoding (video outputs)")
    encoding.add_argument("--codec", default="libx264", help="FFmpeg video encoder (default libx264; ffv1 is lossless)")
    encoding.add_argument("--crf", type=float, default=18, help="quality for x264/x265 (default 18; lower is better)")
    encoding.add_argument("--preset", default="medium", help="encoder speed preset (default medium)")
    encoding.add_argument("--pix-fmt", default=None, help="pixel format (default yuv420p; RGB for lossless codecs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text}")
    return value


def run_pipeline(args: argparse.Namespace, stages: Sequence[Stage]) -> RunReport:
    """Run INPUT through `stages` into OUTPUT with the shared options, and say what was written."""
    from v2v.io.writer import Encoding
    from v2v.pipeline import run

    encoding = Encoding(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt)
    report = run(
        args.input,
        stages,
        args.output,
        overwrite=args.overwrite,
        encoding=encoding,
        start=args.start,
        end=args.end,
        max_frames=args.max_frames,
        progress=not args.no_progress,
    )
    note = f" (input damaged: stopped after {report.frames_read} frames)" if report.damage else ""
    print(
        f"v2v: wrote {report.output}: {report.frames_written} frames in {report.seconds:.1f} s "
        f"({report.fps:.1f} frames/s){note}",
        file=sys.stderr,
    )
    return report
