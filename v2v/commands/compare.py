"""`v2v compare A B -o side_by_side.mp4 [--wipe] [--plot PLOT.png]`: two versions of a clip in one video, A on
the left and B on the right (or a wipe across A's frame), with A's audio; `--plot` draws per-frame warping error
(both clips, on the flow of A or of --guide) and PSNR/SSIM of B against A over time.

Clips that differ are aligned, with a warning: the longer one is cut to the shorter's frame count, and B is
scaled to A's height (side by side) or A's size (wipe).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
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
    """Frames of A in, A and B composed out (B read in step from `path`); ends when either clip does."""

    def __init__(self, path: str, size: tuple[int, int], wipe: bool, frames: int | None) -> None:
        self.path, self.size, self.wipe, self.frames = path, size, wipe, frames

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
                    yield frame.with_image(wipe(frame.image, image, count, self.frames))
                else:
                    yield frame.with_image(np.concatenate([frame.image, image], axis=1))


def wipe(a: np.ndarray, b: np.ndarray, count: int, frames: int | None) -> np.ndarray:
    """B left of a line that sweeps from the left edge to the right one over the clip, A right of it."""
    width = a.shape[1]
    x = round(width * count / max(1, (frames or 1) - 1))
    image = a.copy()
    image[:, :x] = b[:, :x]
    image[:, max(0, x - 1) : x + 1] = 255
    return image


def main(args: argparse.Namespace) -> int:
    from v2v.errors import require
    from v2v.io.probe import probe
    from v2v.io.writer import Encoding, check_output
    from v2v.pipeline import run

    # 1. Check the outputs and what --plot needs before any work; line the clips up.
    check_output(args.output, args.overwrite)
    if args.plot:
        check_output(args.plot, args.overwrite)
        require("matplotlib", "plot")
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
    report = run(args.a, [CompareStage(args.b, size, args.wipe, frames)], args.output, overwrite=args.overwrite,
                 encoding=Encoding(codec=args.codec, crf=args.crf, preset=args.preset), max_frames=frames,
                 progress=not args.no_progress)
    print(f"v2v: wrote {report.output}: {report.frames_written} frames", file=sys.stderr)

    # 3. The plot.
    if args.plot:
        plot_scores(args, (a.width, a.height), frames, float(a.fps) if a.fps else None)
        print(f"v2v: wrote {args.plot}", file=sys.stderr)
    return 0


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


def plot_scores(args: argparse.Namespace, size: tuple[int, int], frames: int | None, fps: float | None) -> None:
    """Warping error of A and of B on the guide's flow, and PSNR/SSIM of B against A, per frame, as a PNG."""
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
