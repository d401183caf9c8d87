"""`v2v relight IN -o OUT --model SD15 --ic-light FILE [--light left|right|top|bottom|none] [--background IMG|VIDEO]
[--mask MASK] --prompt P`: relight a video with IC-Light (`v2v.diffusion.relight`), kept steady in time by restyle's
temporal machinery."""

from __future__ import annotations

import argparse
from typing import Any

from v2v.commands.common import add_io_arguments, at_least
from v2v.commands.inpaint import frame_number, run_with_masks
from v2v.commands.restyle import add_model_arguments, add_temporal_and_speed_arguments
from v2v.devices import set_threads

HELP = "relight a video with IC-Light (SD 1.5): a light direction or a new background, steady in time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from v2v.diffusion.config import LIGHTS

    add_io_arguments(parser)
    model = add_model_arguments(parser, controls=False)
    model.add_argument("--ic-light", metavar="FILE",
                       help="IC-Light's offsets for the SD 1.5 base: iclight_sd15_fc.safetensors (foreground) or "
                            "iclight_sd15_fbc.safetensors (foreground and background), told apart by their shapes")
    light = parser.add_argument_group("the light")
    light.add_argument("--light", choices=LIGHTS,
                       help="where the light comes from: the initial image is IC-Light's gradient from that side "
                            "(default none: start from the frame)")
    light.add_argument("--background", metavar="IMG|VIDEO",
                       help="the new background (fbc models): an image, or a video read by time")
    light.add_argument("--background-length", choices=("error", "hold"),
                       help="a background video shorter than the clip: error (default) refuses it; hold holds its "
                            "last frame")
    light.add_argument("--light-fusion", type=at_least(float, 0, "a weight", maximum=1), metavar="W",
                       help="Light-A-Video's fusion: each step's relit estimate moves by W (fading over the steps) "
                            "towards the previous frame's, warped by the source's flow, where trusted (default 0: "
                            "off; see BENCHMARKS.md)")
    mask = parser.add_argument_group("the foreground (default: the whole frame)")
    mask.add_argument("--mask", metavar="MASK",
                      help="the subject (white): a mask video, an image sequence, one image carried through the "
                           "clip by optical flow, auto:person|salient, point:X,Y@N or box:X0,Y0,X1,Y1@N (tracked by "
                           "SAM 2), as v2v inpaint takes it; elsewhere the foreground is mid-grey")
    mask.add_argument("--mask-frame", type=frame_number, default=None, metavar="N",
                      help="the clip's frame a single mask image was drawn on (default 0)")
    mask.add_argument("--mask-length", choices=("error", "hold"), default="error",
                      help="a mask video or sequence of another length than the clip: error (default) or hold")
    mask.add_argument("--sam-model", metavar="MODEL",
                      help="the SAM 2 video model for point: and box: masks (default facebook/sam2.1-hiera-tiny)")
    look = parser.add_argument_group("the look")
    look.add_argument("--prompt", help="the subject and the light, e.g. 'a man, sunset over sea'")
    look.add_argument("--negative-prompt", help="what it should not look like")
    look.add_argument("--strength", type=float, help="how far from the initial image to go, 0-1 (default 0.9)")
    look.add_argument("--steps", type=int, help="denoising steps before strength (default 25)")
    look.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 2)")
    look.add_argument("--seed", type=int, help="noise seed (default 0)")
    add_temporal_and_speed_arguments(parser)


class RelightFactory:
    """Builds the relight stage once per process (the model loads once) and gives it fresh mask and background
    sources for every pass or segment. Pickled for a Ray worker it carries only the settings."""

    def __init__(self, config: Any, spec: Any, origin: float) -> None:
        self.config, self.spec, self.origin = config, spec, origin
        self.stage: Any = None

    def __call__(self) -> list[Any]:
        from v2v.diffusion.relight import Background, RelightStage

        if self.stage is None:
            self.stage = RelightStage(self.config)
        self.stage.mask = self.spec.open() if self.spec is not None else None
        background = self.config.background
        self.stage.background = Background(background, main_origin=self.origin,
                                           length=self.config.background_length) if background else None
        return [self.stage]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "stage": None}


def build_factory(args: argparse.Namespace) -> RelightFactory:
    """The factory the options describe, inputs checked and the model loaded."""
    from v2v.commands.restyle import config_from_args
    from v2v.diffusion.config import RelightConfig
    from v2v.diffusion.relight import check_background
    from v2v.diffusion.stage import quiet_loading
    from v2v.io.reader import open_source

    set_threads(args.threads)  # only when asked: torch keeps all cores by default
    config = config_from_args(args, "restyle", RelightConfig).check()  # usage errors first, then the inputs
    spec = None
    if args.mask:
        from v2v.commands.inpaint import open_spec

        spec = open_spec(args)
    if config.background:
        check_background(config.background, args.input, config.background_length)
    with open_source(args.input) as reader:
        origin = reader.start_time
    quiet_loading()
    factory = RelightFactory(config, spec, origin)
    factory()
    return factory


def build_stages(args: argparse.Namespace) -> list[Any]:
    """The relight stage the options describe (for `v2v preview`)."""
    return build_factory(args)()


def main(args: argparse.Namespace) -> int:
    from v2v.commands.common import run_pipeline

    factory = build_factory(args)
    if factory.spec is None:
        run_pipeline(args, factory)
    else:
        run_with_masks(args, factory)
    return 0
