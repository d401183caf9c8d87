"""`InpaintStage`: repaint the masked region of every frame, leaving every other pixel exactly as it was.

Per frame, in order:

1. the frame's mask (`MaskSource`: a mask video by time, an image sequence, or one mask carried by flow), grown by
   `dilate` and feathered by `feather` pixels (`composite.coverage`): alpha, and the region to fill (alpha > 0);
2. flow fill (`fill.FillWindow`, unless turned off): the region painted with what neighbouring frames show there;
3. what no frame shows: the diffusion model (`InpaintPainter`, an inpaint family of the registry) paints it, with
   restyle's temporal machinery; without a model OpenCV's Telea inpainting fills it;
4. composite: the source where alpha is 0 (the same bytes), the fill where it is 1, blended between.

With a prompt (`fill=False`), the model repaints the whole region instead: the prompt says what goes there.

Declarations: one output per input at the same instants; `Context(radius, radius)` when flow fill is on (frame t
is filled from t-radius .. t+radius), none otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from v2v.diffusion.config import RestyleConfig
from v2v.errors import ModelError
from v2v.frames import Frame
from v2v.inpaint.composite import check_sizes, composite, coverage, region
from v2v.inpaint.fill import RADIUS, FillWindow, telea
from v2v.inpaint.masks import MaskSource, VideoMask
from v2v.io.side_input import SideInput
from v2v.io.source_frames import SourceFrames
from v2v.pipeline import Context, attach_source, batched
from v2v.scenes import is_cut

log = logging.getLogger(__name__)

PAINT_MARGIN = 4  # pixels: the model repaints this far into the flow-filled pixels around what no frame shows


@dataclasses.dataclass
class InpaintConfig(RestyleConfig):
    """A diffusion inpaint run: the model (an inpaint family's), the prompt (empty: remove, paint what surrounds
    it), strength, steps, guidance, and restyle's temporal settings."""

    kind: ClassVar[str] = "inpaint"

    @property
    def control_kinds(self) -> list[str]:
        """One control per ControlNet: the ones given, else `inpaint` (the frame with the mask's pixels at -1) for an
        inpainting ControlNet (its name says so, as lllyasviel/control_v11p_sd15_inpaint's does), canny for others."""
        if self.controls:
            return self.controls
        return ["inpaint" if "inpaint" in Path(name).name.lower() else "canny" for name in self.controlnets]


def check_inpaint_model(model: str, model_config: str | None = None) -> None:
    """ModelError (one line) when `model` is not of a family that inpaints, naming that family's inpaint models."""
    from v2v.diffusion.families.sd_inpaint import inpaint_families_for
    from v2v.diffusion.registry import all_families, detect

    family, _ = detect(model, model_config, "inpaint")
    if "inpaint" in family.pipelines:
        return
    instead = inpaint_families_for(family.name)
    if instead:
        names = "; ".join(f"{other.examples} (family {other.name})" for other in instead)
        raise ModelError(f"{model!r} is a {family.title} model, not an inpainting one; give one of its inpainting "
                         f"models: {names}")
    known = ", ".join(other.name for other in all_families() if "inpaint" in other.pipelines)
    raise ModelError(f"{model!r} is a {family.title} model, which does not inpaint; inpainting families: {known}")


class InpaintPainter:
    """The diffusion part: an inpaint family's pipeline over the frames, kept steady in time as restyle is (same
    noise per shot, cross-frame attention, flow fusion, keyframes). Built once; `paint` starts afresh."""

    def __init__(self, config: InpaintConfig) -> None:
        from v2v.diffusion.stage import DiffusionStage

        check_inpaint_model(config.check().model, config.model_config)
        self.stage = DiffusionStage(config)
        self.config = self.stage.config

    def diffuse(self, images: list[np.ndarray], masks: list[np.ndarray], indices: list[int],
                cuts: list[bool] | None = None) -> list[np.ndarray]:
        return self.stage.diffuse(images, indices, cuts, masks=masks)

    def paint(self, items: Iterator[tuple[Frame, np.ndarray, np.ndarray]]) -> Iterator[tuple[Frame, np.ndarray]]:
        """(frame, image to paint, bool mask) in clip order -> (frame, painted image) in the same order; frames with
        an empty mask pass as they are."""
        self.stage.bank.reset()
        fuser = self.stage._fuser()
        if self.config.keyframe_every > 1:
            diffused = self._keyframes(items)
        else:
            diffused = self._batches(items)
        for frame, image, mask, painted in diffused:
            if painted is None:
                yield frame, image
                continue
            painted = self.stage._fuse(fuser, painted, image)
            yield frame, np.where(mask[..., None], painted, image)

    def _batches(self, items: Iterator[tuple[Frame, np.ndarray, np.ndarray]]
                 ) -> Iterator[tuple[Frame, np.ndarray, np.ndarray, np.ndarray | None]]:
        previous: np.ndarray | None = None
        for batch in batched(items, self.config.batch_size):
            cuts, todo = [], []
            for frame, image, mask in batch:
                cut = previous is not None and is_cut(previous, frame.image)
                previous = frame.image
                if mask.any():
                    cuts.append(cut)
                    todo.append((image, mask.astype(np.float32), frame.index))
            painted = iter(self.diffuse([t[0] for t in todo], [t[1] for t in todo], [t[2] for t in todo], cuts)
                           if todo else [])
            for frame, image, mask in batch:
                yield frame, image, mask, next(painted) if mask.any() else None

    def _keyframes(self, items: Iterator[tuple[Frame, np.ndarray, np.ndarray]]
                   ) -> Iterator[tuple[Frame, np.ndarray, np.ndarray, np.ndarray | None]]:
        from v2v.diffusion.keyframes import KeyframeWindow
        from v2v.flow import make_flow_estimator

        pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def key(frame: Frame) -> np.ndarray:
            image, mask = pending[frame.index]
            return self.diffuse([image], [mask.astype(np.float32)], [frame.index])[0]

        def frames() -> Iterator[Frame]:
            for frame, image, mask in items:
                pending[frame.index] = (image, mask)
                yield frame

        every, reset = self.config.keyframe_every, self.stage.bank.reset
        window = KeyframeWindow(every, key, make_flow_estimator("dis"), on_cut=reset)
        for frame, painted in window.process(frames()):
            image, mask = pending.pop(frame.index)
            yield frame, image, mask, painted if mask.any() else None


class InpaintStage:
    """A pipeline stage (see `v2v.pipeline.Stage`): fill the masked region of each frame (see the module docs).

    Args:
        masks: where each frame's mask comes from: a `MaskSource` (`VideoMask`, `SequenceMask`, `PropagatedMask`)
            or a mask clip's `SideInput`.
        dilate, feather: pixels the mask grows by, and the width of the soft edge beyond it.
        fill: flow fill from neighbouring frames first (off when a prompt says what to paint).
        radius: frames each side the flow fill looks at.
        painter: the diffusion model for what the flow fill leaves (everything, without `fill`); None: Telea.
    """

    one_to_one = True

    def __init__(self, masks: MaskSource | SideInput, *, dilate: int = 0, feather: int = 0, fill: bool = True,
                 radius: int = RADIUS, painter: InpaintPainter | None = None) -> None:
        check_sizes(dilate, feather)
        if isinstance(masks, SideInput):
            masks = VideoMask(masks)
        self.masks, self.dilate, self.feather = masks, dilate, feather
        self.fill, self.radius, self.painter = fill, radius, painter
        own = Context(before=radius, after=radius) if fill else Context()
        self.context = own + (getattr(masks, "context", None) or Context())  # a mask with state says so
        if getattr(painter, "context", None) is not None:  # a video model's windows reach further
            self.context = self.context + painter.context
        self.frames_masked = self.frames_seen = 0
        self.fill_window: FillWindow | None = None

    def attach_source(self, source: SourceFrames) -> None:
        """The run's source, for masks that number frames in the clip or carry a mask through it."""
        attach_source([self.masks], source)

    def _holes(self, frames: Iterator[Frame], alphas: dict[int, np.ndarray]) -> Iterator[tuple[Frame, np.ndarray]]:
        for frame in frames:
            alpha = coverage(self.masks.mask_for(frame), self.dilate, self.feather)
            alphas[frame.index] = alpha
            hole = region(alpha)
            self.frames_seen += 1
            self.frames_masked += bool(hole.any())
            yield frame, hole

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        alphas: dict[int, np.ndarray] = {}
        holes = self._holes(frames, alphas)
        filled: Iterator[tuple[Frame, np.ndarray, np.ndarray]]
        if self.fill:
            self.fill_window = FillWindow(self.radius)
            filled = self.fill_window.process(holes)
        else:
            filled = ((frame, frame.image, hole) for frame, hole in holes)
        painted: Iterator[tuple[Frame, np.ndarray]]
        if self.painter is not None:
            painted = self.painter.paint((frame, image, self._paint_mask(missing, alphas[frame.index]))
                                         for frame, image, missing in filled)
        else:
            painted = ((frame, telea(image, missing)) for frame, image, missing in filled)
        try:
            for frame, image in painted:
                yield frame.with_image(composite(frame.image, image, alphas.pop(frame.index)))
        finally:
            self.masks.close()
        if self.frames_seen and not self.frames_masked:
            log.warning("the mask is black on every frame: nothing to inpaint, the frames are copied unchanged")

    def _paint_mask(self, missing: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Where the model paints: what no frame showed, grown `PAINT_MARGIN` pixels into the flow fill (so the
        model's paint meets it), kept inside the region."""
        if not self.fill or not missing.any():
            return missing
        import cv2

        grown = cv2.dilate(missing.astype(np.uint8), np.ones((2 * PAINT_MARGIN + 1,) * 2, np.uint8)) > 0
        return grown & region(alpha)


def build_painter(config: InpaintConfig | None) -> Any:
    """An `InpaintPainter` for `config` (a `VideoPainter` for a video family, Wan VACE), or None without a model."""
    if config is None or not config.model:
        return None
    from v2v.diffusion.registry import detect

    if getattr(detect(config.model, config.model_config, "inpaint")[0], "video", False):
        from v2v.diffusion.video_stage import VideoPainter

        check_inpaint_model(config.check().model, config.model_config)
        return VideoPainter(config)
    return InpaintPainter(config)
