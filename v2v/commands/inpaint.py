"""`v2v inpaint IN -o OUT --mask MASK [--mask-frame N] [--prompt P] [--model M] ...`: remove an object or repaint a
region over a video. Without a prompt the region is filled from other frames by flow (what no frame shows: the
model if one is given, else OpenCV's Telea); with a prompt an inpainting model repaints the region. Outside the mask
(after --dilate/--feather) the output is the source, pixel for pixel."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from v2v.commands.common import add_io_arguments, at_least, run_pipeline
from v2v.commands.restyle import add_model_arguments, add_temporal_and_speed_arguments, add_true_cfg_argument
from v2v.devices import set_threads

HELP = "remove an object or repaint a masked region (flow fill from other frames; SD/SDXL/FLUX inpainting models)"

pixels = at_least(int, 0, "pixels", maximum=10_000)  # past an 8K frame's width: a typo, and cv2 overflows
frame_number = at_least(int, 0, "a frame number")


def add_mask_arguments(parser: argparse.ArgumentParser, required: bool = True) -> argparse._ArgumentGroup:
    """--mask, --mask-frame, --mask-length, --sam-model: shared with `v2v mask` (where --mask is one choice of
    several) and every command that takes a mask."""
    group = parser.add_argument_group("the mask (white = edit)")
    group.add_argument("--mask", required=required, metavar="MASK",
                       help="a mask video (aligned by time), an image sequence (folder or pattern, one image per "
                            "frame), one image carried through the clip by optical flow, or made as the clip is read: "
                            "auto:person or auto:salient (a segmentation network, steadied in time), point:X,Y[@N] or "
                            "box:X0,Y0,X1,Y1[@N] (the object there on frame N, tracked by SAM 2)")
    group.add_argument("--mask-frame", type=frame_number, default=None, metavar="N",
                       help="the clip's frame a single mask image was drawn on (default 0), counted from the "
                            "clip's first frame (0) whatever --start says; the mask is carried forward and backward "
                            "from there")
    group.add_argument("--mask-length", choices=("error", "hold"), default="error",
                       help="a mask video or sequence of another length than the clip: error (default) refuses it; "
                            "hold holds a shorter one's last frame and ignores a longer one's extra frames")
    group.add_argument("--sam-model", metavar="MODEL",  # None: the library's default (v2v.inpaint.track)
                       help="the SAM 2 video model for point: and box: masks: a folder, or a hub id in the Hugging "
                            "Face cache (default facebook/sam2.1-hiera-tiny)")
    return group


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    add_mask_arguments(parser)
    edge = parser.add_argument_group("the edge")
    edge.add_argument("--dilate", type=pixels, default=2, metavar="PX", help="grow the mask by PX pixels (default 2)")
    edge.add_argument("--feather", type=pixels, default=2, metavar="PX",
                      help="blend over PX pixels beyond the grown mask (default 2; 0 = a hard edge)")
    edge.add_argument("--fill-radius", type=pixels, default=8, metavar="K",
                      help="flow fill looks K frames each side for the background (default 8; 0 = no flow fill)")
    add_model_arguments(parser, controls=True)
    control = parser._option_string_actions["--control"]
    control.metavar = "inpaint|canny|softedge|tile|depth|pose|VIDEO"
    control.help = (
        "what conditions each ControlNet, in order: inpaint (the frame with the mask's pixels at -1; the default for "
        "an inpainting ControlNet, one whose name says inpaint), canny (the default for others), softedge, tile, "
        "depth, pose, or a path to precomputed maps")
    look = parser.add_argument_group("with a model")
    look.add_argument("--prompt", help="what to paint in the region (needs --model); without it the region is removed")
    look.add_argument("--negative-prompt", help="what it should not look like (FLUX: only with --true-cfg)")
    add_true_cfg_argument(look)
    look.add_argument("--strength", type=float, help="how far from the frame to go inside the mask, 0-1 (default by "
                                                      "family: 1.0 for SD inpainting)")
    look.add_argument("--steps", type=int, help="denoising steps (default by family)")
    look.add_argument("--guidance", type=float, help="classifier-free guidance scale (default by family)")
    look.add_argument("--seed", type=int, help="noise seed (default 0)")
    add_temporal_and_speed_arguments(parser)


def inpaint_config(args: argparse.Namespace) -> Any:
    """The InpaintConfig the options (and recipe) describe, or None without a model."""
    from v2v.commands.restyle import config_from_args
    from v2v.errors import UsageError
    from v2v.inpaint.stage import InpaintConfig

    restyle = config_from_args(args, "restyle")
    if not restyle.model:
        if restyle.prompt:
            raise UsageError("--prompt needs --model (an inpainting model: SD/SDXL inpainting, FLUX Fill or FLUX)")
        return None
    return InpaintConfig(**{field.name: getattr(restyle, field.name) for field in dataclasses.fields(restyle)})


def segmented(args: argparse.Namespace) -> bool:
    return bool(args.resume or args.work_dir or args.backend == "ray")


def mask_folder(args: argparse.Namespace) -> Path:
    """Where a single mask image's propagated masks are written for a segmented run."""
    if args.work_dir:
        return Path(args.work_dir) / "mask"
    output = Path(args.output)
    return output.parent / f".{output.name.replace('%', '_')}.v2v-mask"


class InpaintFactory:
    """Builds the stage for each segment (a fresh mask source each time); the model is loaded once per process.
    Pickled for a Ray worker it carries only the settings."""

    def __init__(self, spec: Any, config: Any, *, dilate: int, feather: int, radius: int) -> None:
        self.spec, self.config = spec, config
        self.dilate, self.feather, self.radius = dilate, feather, radius
        self.painter: Any = None

    def build_painter(self) -> None:
        if self.config is not None and self.painter is None:
            from v2v.inpaint.stage import InpaintPainter

            self.painter = InpaintPainter(self.config)

    def __call__(self) -> list[Any]:
        from v2v.inpaint.stage import InpaintStage

        self.build_painter()
        prompt = bool(self.config is not None and self.config.prompt)
        return [InpaintStage(self.spec.open(), dilate=self.dilate, feather=self.feather,
                             fill=self.radius > 0 and not prompt, radius=max(self.radius, 1), painter=self.painter)]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "painter": None}


def open_spec(args: argparse.Namespace) -> Any:
    from v2v.inpaint.spec import MaskSpec
    from v2v.inpaint.track import DEFAULT_MODEL

    spec = MaskSpec.check(args.mask, args.input, frame=args.mask_frame, length=args.mask_length,
                          sam_model=args.sam_model or DEFAULT_MODEL)
    if spec.kind == "track":
        from v2v.diffusion.stage import quiet_loading

        quiet_loading()  # transformers' loading bar: the CLI has its own
    return spec


def run_with_masks(args: argparse.Namespace, factory: Any) -> None:
    """Run the factory's stages over the clip; for a segmented run a mask made as the clip is read (a carried image,
    an automatic or a tracked mask) is made first and written to a folder the segments read (removed after)."""
    from v2v.inpaint.spec import COMPUTED

    if not segmented(args):
        run_pipeline(args, factory())
        return
    folder = None
    try:
        if factory.spec.kind in COMPUTED:
            folder = mask_folder(args)
            factory.spec = factory.spec.precompute(folder)
        run_pipeline(args, factory)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def build_factory(args: argparse.Namespace) -> InpaintFactory:
    """The factory the options describe, its model loaded."""
    from v2v.diffusion.stage import quiet_loading

    set_threads(args.threads)  # only when asked: torch keeps all cores by default
    config = inpaint_config(args)  # usage errors first, then the inputs, then the model (the slow part)
    spec = open_spec(args)
    if config is not None:
        quiet_loading()
    factory = InpaintFactory(spec, config, dilate=args.dilate, feather=args.feather, radius=args.fill_radius)
    factory.build_painter()
    return factory


def build_stages(args: argparse.Namespace) -> list[Any]:
    """The inpaint stage the options describe (for `v2v preview`)."""
    return build_factory(args)()


def main(args: argparse.Namespace) -> int:
    run_with_masks(args, build_factory(args))
    return 0

