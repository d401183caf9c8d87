"""Inpainting and object removal over video (issue 13).

    from v2v.inpaint import InpaintStage, MaskSpec, PropagatedMask

- masks (`masks.py`): white = edit; a mask video (by time), an image sequence (one image per frame), or one image
  carried through the clip by flow (`propagate.PropagatedMask`); `spec.MaskSpec` checks what the user gave and
  opens the right one (`MaskSpec.check(mask, source).open()`);
- flow fill (`fill.py`): the masked region painted with what neighbouring frames show there;
- compositing (`composite.py`): dilate, feather, and the source's own pixels everywhere else;
- `InpaintStage` (`stage.py`): all of it per frame, with an inpaint diffusion family (`InpaintPainter`) for what no
  frame shows, or for what a prompt asks.
"""

from v2v.inpaint.composite import composite, coverage
from v2v.inpaint.fill import FillWindow, fill_from_neighbours
from v2v.inpaint.masks import MaskSource, SequenceMask, VideoMask, read_mask_image
from v2v.inpaint.propagate import PropagatedMask, propagate_step
from v2v.inpaint.spec import MaskSpec
from v2v.inpaint.stage import InpaintConfig, InpaintPainter, InpaintStage

__all__ = [
    "FillWindow",
    "InpaintConfig",
    "InpaintPainter",
    "InpaintStage",
    "MaskSource",
    "MaskSpec",
    "PropagatedMask",
    "SequenceMask",
    "VideoMask",
    "composite",
    "coverage",
    "fill_from_neighbours",
    "propagate_step",
    "read_mask_image",
]
