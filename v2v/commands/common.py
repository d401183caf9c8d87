"""Options every processing command shares, and the one way each command runs its pipeline."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from v2v.errors import V2VError
    from v2v.pipeline import RunReport, Stage

# Python parameter -> its flag, where the flag is not the parameter with dashes for underscores. Library errors
# name the parameter; the CLI says the flag (`flag`, `error_message`).
FLAGS = {"controlnets": "--controlnet", "controls": "--control", "control_scales": "--control-scale",
         "control_modes": "--control-mode",
         "method": "--flow",  # make_flow_estimator(method)
         # the mask options: PropagatedMask(anchor), MaskSpec.check(frame, length), SequenceMask(length)
         "anchor": "--mask-frame", "frame": "--mask-frame", "length": "--mask-length"}
# argparse destination -> Python parameter, for the same flags
PARAMETERS = {flag.lstrip("-").replace("-", "_"): parameter for parameter, flag in FLAGS.items()}

# Arguments that don't change the output: a resumed run may differ in these.
_NOT_OPTIONS = {"input", "output", "overwrite", "resume", "work_dir", "backend", "workers", "address", "no_progress",
                "no_resume_data", "verbose", "handler", "offload", "compile"}


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT, -o OUTPUT, the time window, --overwrite and the encoder settings."""
    parser.add_argument("input", help="video file, image folder, or pattern such as frames/%%05d.png")
    parser.add_argument("-o", "--output", required=True, help="video file, or pattern such as out/%%05d.png")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    window = parser.add_argument_group("which frames")
    window.add_argument("--start", type=seconds, default=0.0, help="start at this time (seconds)")
    window.add_argument("--end", type=seconds, default=None, help="stop before this time (seconds)")
    window.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="process at most N frames")
    encoding = parser.add_argument_group("encoding (video outputs)")
    encoding.add_argument("--codec", default="libx264", help="FFmpeg video encoder (default libx264; ffv1 is lossless)")
    encoding.add_argument("--crf", type=at_least(float, 0, "a quality"), default=18,
                          help="quality for x264/x265 (0-51, default 18; lower is better)")
    encoding.add_argument("--preset", default="medium", help="encoder speed preset (default medium)")
    encoding.add_argument("--pix-fmt", default=None, help="pixel format (default yuv420p; RGB for lossless codecs)")
    parser.add_argument("--start-number", type=at_least(int, 0, "a whole number"), default=None, metavar="N",
                        help="image-sequence outputs: number of the first file (default: the source sequence's "
                        "first number, else 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    long = parser.add_argument_group(
        "long runs",
        "a video run of at least two segments (--segment-seconds each) keeps finished segments in a work folder "
        "beside the output, removed when the run succeeds; after a crash, a kill or a reboot the same command "
        "with --resume redoes only what was in flight. Stages whose state reaches back without bound (stabilize, "
        "restyle with temporal on) are segmented only with --resume, since segments restart that state. An "
        "image-sequence output keeps its finished frames in a hidden .PATTERN.v2v-partial folder beside them; "
        "--resume continues from there.",
    )
    long.add_argument("--resume", action="store_true",
                      help="continue from the work folder of a stopped run (or segment a run that would not be)")
    long.add_argument("--no-resume-data", action="store_true",
                      help="one pass, no work folder or kept frames: nothing to resume if the run is stopped")
    long.add_argument("--work-dir", default=None, help="work folder (default: .OUTPUT.v2v-work beside the output)")
    long.add_argument("--segment-seconds", type=at_least(float, 0.001, "seconds"), default=10.0,
                      help="segment length (default 10 s)")
    long.add_argument("--overlap", type=at_least(int, 0, "a whole number"), default=None, metavar="N",
                      help="context frames decoded before each segment (default: what the stages declare they need)")
    long.add_argument("--backend", choices=("local", "ray"), default="local",
                      help="run segments here, or as Ray tasks (pip install 'v2v[ray]')")
    long.add_argument("--workers", type=positive_int, default=2, help="Ray tasks at once (default 2)")
    long.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")


def flag(parameter: str) -> str:
    """The flag that sets the Python parameter `parameter` (`batch_size` -> `--batch-size`)."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def error_message(error: V2VError) -> str:
    """The error's one line as the CLI says it: each parameter it names is said by its flag."""
    return error.message(flag)


def at_least(
    kind: Callable[[str], float], minimum: float, what: str, maximum: float = math.inf
) -> Callable[[str], Any]:
    """An argparse type: text parsed by `kind` (int or float), refused below `minimum`, above `maximum` or
    infinite, named `what`."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum:g}, got {text}")
        if math.isinf(value):
            raise argparse.ArgumentTypeError(f"expected a finite {what}, got {text}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected {what} from {minimum:g} to {maximum:g}, got {text}")
        return value

    return parse


# A year: times past it can't be a clip's, and would overflow FFmpeg's microsecond seek positions.
seconds = at_least(float, 0, "seconds", maximum=365 * 24 * 3600)
positive_int = at_least(int, 1, "a whole number")


def _resumable_by_default(args: argparse.Namespace, stages: Sequence[Stage]) -> bool:
    """Whether a run keeps resume data without being asked: video in and out, at least two segments long, and
    stages that a segmented run reproduces exactly (`Context.exact`) without much redone work (`by_default`)."""
    from v2v.io.sequences import is_image_sequence
    from v2v.pipeline import context_of

    if getattr(args, "no_resume_data", False) or is_image_sequence(args.input) or is_image_sequence(args.output):
        return False
    context = context_of(stages)
    if not (context.exact and context.by_default):
        return False
    from v2v.io.probe import probe

    info = probe(args.input, count_frames=False)
    span = (args.end if args.end is not None else info.duration or 0.0) - args.start
    if args.max_frames is not None and info.fps:
        span = min(span, args.max_frames / float(info.fps))
    return span >= 2 * args.segment_seconds


def run_pipeline(args: argparse.Namespace, stages: Sequence[Stage] | Callable[[], Sequence[Stage]]) -> RunReport:
    """Run INPUT through the stages into OUTPUT with the shared options, and say what was written.

    `stages` is a list, or a function that builds them: segmented runs (--resume, --backend ray) build fresh
    stages for every segment, on the worker that runs it, so pass a function when stages hold state or models.
    """
    from v2v.io.sequences import is_image_sequence
    from v2v.io.writer import Encoding

    encoding = Encoding(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt)
    if not is_image_sequence(args.output):
        encoding.codec_options()  # refuses an unknown codec or a bad --crf before any model loads
    common: dict[str, Any] = dict(
        overwrite=args.overwrite, encoding=encoding, start=args.start, end=args.end, max_frames=args.max_frames,
        progress=not args.no_progress,
    )
    built = list(stages() if callable(stages) else stages)  # once: a single pass runs these, segments read them
    options = {key: value for key, value in vars(args).items() if key not in _NOT_OPTIONS}
    sequence_out = is_image_sequence(args.output) and not (args.work_dir or args.backend == "ray")
    if not sequence_out and (args.resume or args.work_dir or args.backend == "ray"
                             or _resumable_by_default(args, built)):
        from v2v.segments import run_segmented

        report = run_segmented(
            args.input, stages if callable(stages) else lambda: stages, args.output, options=options,
            declared=built,
            resume=args.resume, work_dir=args.work_dir, segment_seconds=args.segment_seconds, overlap=args.overlap,
            backend=args.backend, workers=args.workers, address=args.address, **common,
        )
    else:
        from v2v.pipeline import run

        # an image-sequence output resumes from its finished frames (kept unless --no-resume-data)
        report = run(args.input, built, args.output, **common, start_number=args.start_number, resume=args.resume,
                     keep_partial=not getattr(args, "no_resume_data", False), options=options)
    say_written(report)
    return report


def say_written(report: RunReport) -> None:
    """The last line of every command that writes frames: where, how many, how long."""
    note = f" (input damaged: stopped after {report.frames_read} frames)" if report.damage else ""
    # a slow stage (stylize --method optimize) says its seconds a frame, where frames/s would read 0.0
    rate = f"{report.fps:.1f} frames/s" if report.fps >= 1 or not report.fps else f"{1 / report.fps:.1f} s/frame"
    print(
        f"v2v: wrote {report.output}: {report.frames_written} frames in {report.seconds:.1f} s ({rate}){note}",
        file=sys.stderr,
    )
