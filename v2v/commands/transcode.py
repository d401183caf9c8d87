"""`v2v transcode IN -o OUT`: the identity pipeline, the baseline every other command builds on."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from v2v.commands.common import add_io_arguments, run_pipeline

if TYPE_CHECKING:
    from v2v.pipeline import Stage

HELP = "re-encode a video (audio and subtitles copied, timing kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)


def build_stages(args: argparse.Namespace) -> list[Stage]:
    """None: frames go straight from the decoder to the encoder."""
    return []


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, stages=build_stages(args))
    return 0
