"""The `v2v` command: a thin layer over the Python API, one pipeline per command.

Only argparse is imported up front, so `v2v --version` and `--help` answer at once; each command imports
what it needs when it runs. Errors are one line on stderr (a traceback only with --verbose); the exit
code is 1 for a runtime error, 2 for a usage error, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from v2v import __version__

# name -> module; each module has HELP, add_arguments(parser) and main(args) -> int
COMMANDS = {
    "probe": "v2v.commands.probe",
    "transcode": "v2v.commands.transcode",
    "stabilize": "v2v.commands.stabilize",
    "metrics": "v2v.commands.metrics",
    "upscale": "v2v.commands.upscale",
    "denoise": "v2v.commands.denoise",
    "models": "v2v.commands.models",
    "restyle": "v2v.commands.restyle",
    "edit": "v2v.commands.edit",
    "inpaint": "v2v.commands.inpaint",
    "relight": "v2v.commands.relight",
    "mask": "v2v.commands.mask",
    "annotate": "v2v.commands.annotate",
    "interpolate": "v2v.commands.interpolate",
    "preview": "v2v.commands.preview",
    "compare": "v2v.commands.compare",
    "stylize": "v2v.commands.stylize",
    "translate": "v2v.commands.translate",
}

log = logging.getLogger("v2v")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (what is wrong, and where the help is), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="v2v", description="Video-to-video editing: restyle, restore and upscale footage."
    )
    parser.add_argument("--version", action="version", version=f"v2v {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        sub.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
        module.add_arguments(sub)
        sub.set_defaults(handler=module.main)
    return parser


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("v2v: %(levelname)s: %(message)s" if verbose else "v2v: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:  # third-party chatter stays out even then
        for noisy in ("libav", "PIL", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, so either removes the partial output. (SIGINT is
    set explicitly because a shell starts background jobs with it ignored.)"""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _run_command(args: argparse.Namespace) -> int | None:
    """The command's handler; an optional module that is not installed ends in the line naming its extra."""
    from v2v.errors import missing_dependency

    try:
        return args.handler(args)
    except ModuleNotFoundError as error:
        missing = missing_dependency(error)
        if missing is None:
            raise
        raise missing from error


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    _interrupt_on_signals()
    from v2v.commands.common import error_message
    from v2v.errors import V2VError

    try:
        return int(_run_command(args) or 0)
    except BrokenPipeError:  # `v2v probe ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("v2v: interrupted; no output was written", file=sys.stderr)
        return 130
    except V2VError as error:
        if args.verbose:
            log.exception("failed")
        print(f"v2v: error: {error_message(error)}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # a bug: still one line, the traceback with --verbose
        if args.verbose:
            log.exception("internal error")
        detail = f"{type(error).__name__}: {error}"
        print(f"v2v: internal error: {detail} (rerun with --verbose for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
