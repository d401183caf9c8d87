"""`v2v mask IN --mask M.png [--mask-frame N] -o MASK.mp4|masks/%05d.png`: write the mask every frame of the clip gets
(white = edit): one image carried through the clip by flow, or a mask video/sequence as it lines up with the clip. A
user can check it, edit it (an image sequence suits hand edits) and give it back to `v2v inpaint --mask`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from v2v.commands.common import add_io_arguments
from v2v.commands.inpaint import add_mask_arguments, open_spec, run_with_masks

if TYPE_CHECKING:
    from v2v.frames import Frame  # numpy: not at import, so `v2v --version` stays light

HELP = "write the mask each frame gets (one image carried by optical flow, or a mask video lined up) for checking"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    add_mask_arguments(parser)


class MaskStage:
    """Each frame becomes its mask, as grey RGB (white = edit)."""

    one_to_one = True

    def __init__(self, masks: Any) -> None:
        self.masks = masks

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


def build_stages(args: argparse.Namespace) -> list[Any]:
    """The mask stage the options describe (for `v2v preview`: source | mask)."""
    return MaskFactory(open_spec(args))()


def main(args: argparse.Namespace) -> int:
    run_with_masks(args, MaskFactory(open_spec(args)))
    return 0
