"""`v2v transcode IN -o OUT`: the identity pipeline, the baseline every other command builds on."""

from __future__ import annotations

import argparse

from v2v.commands.common import add_io_arguments, run_pipeline

HELP = "re-encode a video (audio and subtitles copied, timing kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, stages=())
    return 0
