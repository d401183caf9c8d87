"""`v2v edit IN -o OUT --model M --instruction "make it winter" ...`: instruction editing of a video with an
instruction-following family (the help line names them, from `v2v.diffusion.registry`). The source frame is the
image the editor sees; the temporal machinery is restyle's (shared noise, cross-frame attention, flow fusion,
keyframes)."""

from __future__ import annotations

import argparse

from v2v.commands.common import add_io_arguments
from v2v.commands.restyle import (
    add_model_arguments,
    add_temporal_and_speed_arguments,
    add_true_cfg_argument,
    add_video_arguments,
    diffusion_stages,
    family_titles,
    run_diffusion,
)

HELP = f"edit a video by an instruction ({family_titles('edit')})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    add_model_arguments(parser, controls=False)
    look = parser.add_argument_group("the edit")
    look.add_argument("--instruction", help='what to change, e.g. "make it a snowy winter day" (required)')
    look.add_argument("--negative-prompt", help="what it should not look like (FLUX.1 Kontext: only with --true-cfg)")
    add_true_cfg_argument(look)
    look.add_argument(
        "--image-guidance", type=float, help="how closely to hold to the source frame (default by family: 1.5)"
    )
    look.add_argument("--guidance", type=float, help="how strongly to follow the instruction (default 7.5)")
    look.add_argument("--steps", type=int, help="denoising steps (default by family: 20)")
    look.add_argument("--seed", type=int, help="noise seed (default 0)")
    add_temporal_and_speed_arguments(parser)
    add_video_arguments(parser)


def build_stages(args: argparse.Namespace) -> list[object]:
    """For `v2v preview`: the edit stage the options describe."""
    return diffusion_stages(args, "edit")()


def main(args: argparse.Namespace) -> int:
    return run_diffusion(args, "edit")
