"""`v2v compare A B -o side_by_side.mp4 [--wipe] [--plot PLOT.png]`: two versions of a clip in one video, A on
the left and B on the right (or a wipe across A's frame), each labelled with its name, with A's audio; `--plot`
draws per-frame warping error (both clips, on the flow of A or of --guide) and PSNR/SSIM of B against A over time.

Clips that differ are aligned, with a warning: the longer one is cut to the shorter's frame count, and B is
scaled to A's height (side by side) or A's size (wipe).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from v2v.commands.common import positive_int
from v2v.commands.stabilize import FLOWS

if TYPE_CHECKING:
    import numpy as np

    from v2v.io.probe import VideoInfo

HELP = "show two versions of a clip side by side (or as a wipe) with A's audio; --plot their scores over time"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="the first clip (left; its audio is kept)")
    parser.add_argument("b", metavar="B", help="the second clip (right)")
    parser.add_argument("-o", "--output", required=True, help="the comparison video, e.g. side_by_side.mp4")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs if they exist")
    parser.add_argument("--wipe", action="store_true",
                        help="one frame of A's size, B revealed from the left by a line sweeping across the clip")
    parser.add_argument("--labels", default=None, metavar="A,B",
                        help="the names written on the video (default: the files' names)")
    parser.add_argument("--no-labels", action="store_true", help="write no names on the video")
    parser.add_argument("--plot", default=None, metavar="PLOT.png",
                        help="also write per-frame warping error and PSNR/SSIM (B against A) over time "
                             "(needs pip install 'v2v[plot]')")
    parser.add_argument("--guide", default=None, metavar="ORIGINAL",
                        help="the clip whose motion the warping error follows (default A)")
    parser.add_argument("--flow", choices=FLOWS, default="dis",
                        help="flow for the warping error (default dis: fast on a CPU)")
    parser.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="compare N frames at most")
    parser.add_argument("--codec", default="libx264", help="video encoder (default libx264)")
    parser.add_argument("--crf", type=float, default=18, help="quality for x264/x265 (default 18)")
    parser.add_argument("--preset", default="medium", help="encoder speed preset (default medium)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


class CompareStage:
    """Frames of A in, A and B composed out (B read in step from `path`), each with its label in a top corner
    when `labels` (A's, B's) are given; ends when either clip does."""

    def __init__(self, path: str, size: tuple[int, int], wipe: bool, frames: int | None,
                 labels: tuple[str, str] | None = None) -> None:
        from v2v.pictures import text_patch

        self.path, self.size, self.wipe, self.frames = path, size, wipe, frames
        text = max(10, size[1] // 24)  # readable at any height, small beside the picture
        self.labels = None if labels is None else [text_patch(label, text) for label in labels]

    def process(self, frames: Iterator) -> Iterator:
        import numpy as np

        from v2v.io.reader import open_source
        from v2v.pictures import resize

        with open_source(self.path, max_frames=self.frames) as reader:
            others = iter(reader)
            for count, frame in enumerate(frames):
                other = next(others, None)
                if other is None:
                    return
                image = resize(other.image, *self.size)
                if self.wipe:
                    composed = wipe(frame.image, image, count, self.frames)
                else:
                    composed = np.concatenate([frame.image, image], axis=1)
                if self.labels is not None:
                    self.put_labels(composed, frame.image.shape[1])
                yield frame.with_image(composed)

    def put_labels(self, image: np.ndarray, a_width: int) -> None:
        """A's label over A and B's over B: side by side, top left of each half; in a wipe, where B is left of the
        line, B's top left and A's top right."""
        from v2v.pictures import put

        a, b = self.labels  # type: ignore[misc]
        margin = max(2, image.shape[0] // 60)
        if self.wipe:
            put(image, b, margin, margin)
            put(image, a, image.shape[1] - a.shape[1] - margin, margin)
        else:
            put(image, a[:, : a_width - 2 * margin], margin, margin)  # each label kept inside its own half
            put(image, b, a_width + margin, margin)


def wipe(a: np.ndarray, b: np.ndarray, count: int, frames: int | None) -> np.ndarray:
    """B left of a line that sweeps from the left edge to the right one over the clip, A right of it."""
    width = a.shape[1]
    x = round(width * count / max(1, (frames or 1) - 1))
    image = a.copy()
    image[:, :x] = b[:, :x]
    image[:, max(0, x - 1) : x + 1] = 255
    return image


def main(args: argparse.Namespace) -> int:
    from v2v.commands.common import say_written
    from v2v.errors import require
    from v2v.io.probe import probe
    from v2v.io.writer import Encoding, check_output
    from v2v.pipeline import RunReport, run

    # 1. Check the outputs and what --plot needs before any work; line the clips up.
    check_output(args.output, args.overwrite)
    if args.plot:
        check_output(args.plot, args.overwrite)
        require("matplotlib", "plot")
    labels = video_labels(args)
    a, b = probe(args.a), probe(args.b)
    frames = aligned_count(a, b, args.max_frames)
    if args.wipe:
        size = (a.width, a.height)
    else:
        width = max(1, round(b.width * a.height / b.height))
        size = (width + (a.width + width) % 2, a.height)  # an even total width: no padding for yuv420p
    if (b.width, b.height) != (a.width, a.height):
        log.warning("%s is %dx%d and %s is %dx%d: B is scaled to %dx%d", args.b, b.width, b.height, args.a,
                    a.width, a.height, *size)

    # 2. The video: A's frames (and audio) through a stage that adds B.
    report = run(args.a, [CompareStage(args.b, size, args.wipe, frames, labels)], args.output,
                 overwrite=args.overwrite, encoding=Encoding(codec=args.codec, crf=args.crf, preset=args.preset),
                 max_frames=frames, progress=not args.no_progress)
    say_written(report)

    # 3. The plot, its line timed like the video's.
    if args.plot:
        started = time.monotonic()
        scored = plot_scores(args, (a.width, a.height), frames, float(a.fps) if a.fps else None)
        say_written(RunReport(args.plot, scored, scored, time.monotonic() - started, None))
    return 0


def video_labels(args: argparse.Namespace) -> tuple[str, str] | None:
    """The names written over A and B: --labels, else the files' names; None with --no-labels, or without Pillow
    (one warning: the video is still made)."""
    import importlib.util

    from v2v.errors import UsageError

    if args.no_labels:
        return None
    if args.labels is not None:
        labels = args.labels.split(",")
        if len(labels) != 2 or not all(label.strip() for label in labels):
            raise UsageError(f"--labels takes two names with a comma between them, e.g. --labels before,after; got "
                             f"{args.labels!r}")
        return labels[0].strip(), labels[1].strip()
    if importlib.util.find_spec("PIL") is None:
        log.warning("labels need Pillow (pip install 'v2v[plot]'): the video is written without them")
        return None
    return os.path.basename(args.a), os.path.basename(args.b)


def aligned_count(a: VideoInfo, b: VideoInfo, max_frames: int | None) -> int | None:
    """The frames both clips have (capped at max_frames), with a warning when their counts differ."""
    counts = [a.frame_count, b.frame_count]
    known = [count for count in counts if count]
    frames = min(known) if known else None
    if len(known) == 2 and counts[0] != counts[1]:
        log.warning("%s has %d frames and %s has %d: comparing the first %d", a.path, counts[0], b.path, counts[1],
                    frames)
    if max_frames is not None:
        frames = min(frames, max_frames) if frames else max_frames
    return frames


def plot_scores(args: argparse.Namespace, size: tuple[int, int], frames: int | None, fps: float | None) -> int:
    """Warping error of A and of B on the guide's flow, and PSNR/SSIM of B against A, per frame, as a PNG; returns
    the frames scored."""
    from v2v.flow import make_flow_estimator
    from v2v.io.reader import open_source
    from v2v.metrics import ScoreMeter
    from v2v.pictures import plot_series, resize

    estimator = make_flow_estimator(args.flow)
    meters = {"A": ScoreMeter(), "B": ScoreMeter()}
    guide_path = args.guide or args.a
    readers = [open_source(path, max_frames=frames) for path in (args.a, args.b, guide_path)]
    try:
        previous = None
        for frame_a, frame_b, frame_g in zip(*readers, strict=False):  # aligned: the shortest decides
            b_image = resize(frame_b.image, *size)
            g_image = resize(frame_g.image, *size)
            flows = estimator.pair(previous, g_image) if previous is not None else None
            meters["A"].update(frame_a.image, g_image, None, flows)
            meters["B"].update(b_image, g_image, frame_a.image, flows)
            previous = g_image
    finally:
        for reader in readers:
            reader.close()
    b_series = meters["B"].series()
    name = f"guide {os.path.basename(guide_path)}, flow {args.flow}"
    plot_series(args.plot, f"A = {os.path.basename(args.a)}, B = {os.path.basename(args.b)} ({name})",
                {"A": meters["A"].series()["warping_error"], "B": b_series["warping_error"]},
                {"psnr": b_series["psnr"], "ssim": b_series["ssim"]}, fps=fps, overwrite=args.overwrite)
    return meters["B"].frames
