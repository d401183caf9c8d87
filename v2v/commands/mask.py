"""`v2v mask IN (--mask M | --auto person|salient | --point X,Y[@N] | --box X0,Y0,X1,Y1[@N]) -o MASKS`: write
the mask every frame of the clip gets (white = edit; a video, or images such as masks/%05d.png): one image carried
through the clip by flow, a mask video/sequence as it lines up with the clip, an automatic mask (a segmentation
network, steadied in time) or the object under a point or in a box, tracked by SAM 2. A user can check it, edit it (an
image sequence suits hand edits) and give it back to `v2v inpaint --mask`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from v2v.commands.common import add_io_arguments
from v2v.commands.inpaint import add_mask_arguments, open_spec, run_with_masks

if TYPE_CHECKING:
    from v2v.frames import Frame  # numpy: not at import, so `v2v --version` stays light

HELP = ("write the mask each frame gets (automatic: person or salient; tracked from a point or box by SAM 2; one "
        "image carried by optical flow; a mask video lined up)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    group = add_mask_arguments(parser, required=False)
    group.add_argument("--auto", metavar="CLASS", help="an automatic mask: person (MediaPipe selfie segmentation) or "
                                                       "salient (U2-Net-p), steadied in time; the same as --mask "
                                                       "auto:CLASS")
    group.add_argument("--point", metavar="X,Y[@N]", help="the object under pixel X,Y of frame N (default 0), "
                                                          "tracked by SAM 2 through the clip; --mask point:X,Y@N")
    group.add_argument("--box", metavar="X0,Y0,X1,Y1[@N]", help="the object in that box on frame N (default 0), "
                                                                "tracked by SAM 2; --mask box:X0,Y0,X1,Y1@N")


def mask_text(args: argparse.Namespace) -> str:
    """The one mask the options give, as `--mask` would say it; UsageError unless exactly one is given."""
    from v2v.errors import UsageError

    given = [text for text in (args.mask, args.auto and f"auto:{args.auto}", args.point and f"point:{args.point}",
                               args.box and f"box:{args.box}") if text]
    if len(given) != 1:
        raise UsageError("give one mask: --mask MASK, --auto person|salient, --point X,Y[@N] or --box "
                         "X0,Y0,X1,Y1[@N]" + ("" if not given else f" (got {len(given)})"))
    return given[0]


class MaskStage:
    """Each frame becomes its mask, as grey RGB (white = edit)."""

    one_to_one = True

    def __init__(self, masks: Any) -> None:
        from v2v.pipeline import Context

        self.masks = masks
        self.context = getattr(masks, "context", None) or Context()  # a mask with state (automatic, tracked) says so

    def attach_source(self, source: Any) -> None:
        from v2v.pipeline import attach_source

        attach_source([self.masks], source)

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        from v2v.flow.visualize import mask_to_rgb

        try:
            for frame in frames:
                yield frame.with_image(mask_to_rgb(self.masks.mask_for(frame)))
        finally:
            self.masks.close()


class MaskFactory:
    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def __call__(self) -> list[Any]:
        return [MaskStage(self.spec.open())]


def mask_spec(args: argparse.Namespace) -> Any:
    args.mask = mask_text(args)
    return open_spec(args)


def build_stages(args: argparse.Namespace) -> list[Any]:
    """The mask stage the options describe (for `v2v preview`: source | mask)."""
    return MaskFactory(mask_spec(args))()


def main(args: argparse.Namespace) -> int:
    run_with_masks(args, MaskFactory(mask_spec(args)))
    return 0
