"""`StabilizeStage`: the pipeline stage behind `v2v stabilize`.

The run's source is the processed (flickering) video; the original (the guide) is a `SideInput` aligned by
frame number over the same window, frame t of one with frame t of the other, so timing and audio come from
the processed video untouched. A guide of another size at the same aspect ratio (an upscale's original) is read
at its own size: the fuser takes its flow and trust there, where they are cheap, and scales them to the processed
frame. A guide of another aspect ratio, or one that ends first or goes on, is refused.

Run by the pipeline, the stage is handed the run's source (`attach_source`, a `SourceFrames`) and reads it, and the
guide, a second time, `config.lookahead` frames ahead of the main pass, as the fuser's preview: the fuser keeps only
the looks of those frames (13-16 KB a frame for landscape video of any size), so the first frame of every shot is
already corrected with no delay and flat memory, and segments need no context after them. Driven by hand without a
source (or `processed`), the fuser holds `config.lookahead` full frames instead.

A noisy guide (restoring noisy footage) gives poor flow, and its pixel noise reads as mismatch, so the fuser
trusts less and steadies less. With `guide_denoiser` (`--guide-denoise`) the guide goes through it (FFDNet,
`v2v denoise`'s temporal mode) before the fuser takes its flow and trust; the look-ahead keeps the raw guide
(its looks are cell means, where the noise averages out). Without one, a guide whose first frame looks noisy
gets a one-line warning.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from v2v.consistency.fusion import FusionConfig, FusionStep, TemporalFuser
from v2v.errors import InputError
from v2v.flow.estimators import FlowEstimator
from v2v.flow.warp import is_uniform_scale
from v2v.frames import Frame
from v2v.io.reader import Reader, TimeWindow, open_source
from v2v.io.side_input import SideInput
from v2v.io.source_frames import SourceFrames, time_of_frame
from v2v.pipeline import Context, Stage

log = logging.getLogger(__name__)

WARM_UP_FRAMES = 8  # context decoded before each segment of a segmented run
NOISY_GUIDE_SIGMA = 4.0  # estimated noise (0-255) above which a guide is called noisy (clean clips read 0.5-1.5)


def check_same_shape(processed: Reader, guide: Reader, max_frames: int | None = None,
                     windowed: bool = False, any_scale: bool = False) -> None:
    """Raise InputError (one line) when the two clips differ in size (with `any_scale`: in aspect ratio) or in a
    known frame count.

    Counts are compared after `max_frames`; with a time window (`windowed`) they are left to the stage,
    which stops at the first frame one clip has and the other lacks.
    """
    a, b = processed.info, guide.info
    if (a.width, a.height) != (b.width, b.height) and not (
        any_scale and is_uniform_scale((a.height, a.width), (b.height, b.width))
    ):
        raise InputError(size_differs(a.path, (a.width, a.height), b.path, (b.width, b.height), any_scale))
    if windowed or not a.frame_count or not b.frame_count:
        return
    count_a, count_b = (min(n, max_frames or n) for n in (a.frame_count, b.frame_count))
    if count_a != count_b:
        raise InputError(f"frame count differs: {a.path} has {count_a} frames but the guide {b.path} has "
                         f"{count_b}; they must match frame for frame")


def size_differs(processed: object, size: tuple[int, int], guide: object, guide_size: tuple[int, int],
                 any_scale: bool) -> str:
    """The one line refusing a guide of `guide_size` (width, height) for a processed clip of `size`."""
    why = ", another aspect ratio" if any_scale else ""
    return (f"size differs: {processed} is {size[0]}x{size[1]} but the guide {guide} is {guide_size[0]}x{guide_size[1]}"
            f"{why}; give the original the edit was made from")


class StabilizeStage:
    """Make a processed clip temporally consistent, guided by the original's motion.

    Args:
        guide: the original video (file, folder or pattern): the processed video's size, or another at its aspect
            ratio (the original of an upscale).
        config: FusionConfig. estimator: flow estimator (default DIS).
        start, end, max_frames: the same window as the processed source's, applied to the guide.
        processed: the processed video's path, read a second time ahead of the run for the look-ahead; None (the
            usual): the run's source, which the pipeline hands over (`attach_source`).
        check_end: refuse a guide with frames left when the processed frames end (off for segmented runs,
            whose passes end at segment boundaries; the counts are compared up front there).
        device: torch device for the fusion. debug_dir: write flow and trust PNGs for every frame there.
        guide_denoiser: a stage that denoises the guide before the fuser takes its flow and trust (a
            `v2v.restore.denoise.DenoiseStage`), for noisy footage; None uses the guide as it is.
    """

    def __init__(self, guide: str | os.PathLike[str], config: FusionConfig | None = None,
                 estimator: FlowEstimator | None = None, *, start: float = 0.0, end: float | None = None,
                 max_frames: int | None = None, device: str | None = None,
                 debug_dir: str | os.PathLike[str] | None = None, check_end: bool = True,
                 processed: str | os.PathLike[str] | None = None, guide_denoiser: Stage | None = None) -> None:
        # the fuser's running average reaches back without bound: segments warm it up, and only approximate;
        # the look-ahead reads the source past a segment's end itself, so no context is needed after it
        self.context = Context(before=WARM_UP_FRAMES, after=0, exact=False)
        self.window = TimeWindow(start=start, end=end, max_frames=max_frames)
        self.guide = SideInput(guide, what="the guide", align="index", window=self.window, size="keep")
        self.source = None if processed is None else SourceFrames(processed)
        self._own_source = processed is not None
        self.guide_denoiser = guide_denoiser
        self._noise_checked = False  # once per stage, not per segment
        self.check_end = check_end
        self.debug_dir = Path(debug_dir) if debug_dir is not None else None
        self._fuser_settings = (config, estimator, device)
        self.fuser = self._new_fuser()

    def _new_fuser(self, preview: Iterator[tuple[np.ndarray, np.ndarray]] | None = None) -> TemporalFuser:
        config, estimator, device = self._fuser_settings
        return TemporalFuser(config, estimator, device=device,
                             on_step=self._debug if self.debug_dir is not None else None, preview=preview)

    def attach_source(self, source: SourceFrames) -> None:
        """The run's source (the processed video), read ahead for the look-ahead; `processed` given wins."""
        if not self._own_source:
            self.source = source

    def _open_guide(self, skip: int) -> Reader:
        """A second reader of the guide over the window from its frame `skip` (a side input, read by its path)."""
        start, end, max_frames = self.window.start, self.window.end, self.window.max_frames
        if skip:
            start = time_of_frame(self.guide.path, skip, start)
            max_frames = None if max_frames is None else max_frames - skip
        return open_source(self.guide.path, start=start, end=end, max_frames=max_frames)

    def _open_preview(self, skip: int) -> tuple[Iterator[Frame], Reader] | None:
        """The processed frames of the window from its frame `skip` on, and a second reader of the guide, for the
        fuser's look-ahead (None without)."""
        config = self._fuser_settings[0]
        if self.source is None or config is None or not config.lookahead:
            return None
        begin, stop = self.window.span(self.source.times)
        return self.source.frames(begin + skip, stop), self._open_guide(skip)

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            return
        # A segment of a segmented run starts part-way (its first frame's source_index): the guide and the
        # look-ahead follow, and a fresh fuser is warmed up by the segment's context frames.
        skip = first.source_index if first.source_index is not None else first.index
        previews = self._open_preview(skip)
        preview = ((a.image, b.image) for a, b in zip(*previews, strict=False)) if previews else None
        self.fuser = self._new_fuser(preview)
        held: list[Frame] = []  # frames waiting for lookahead, in order
        last = first
        try:
            for frame, original in self._with_guide(itertools.chain([first], frames)):
                last = frame
                held.append(frame)
                for image in self.fuser.push(frame.image, original):
                    yield held.pop(0).with_image(image)
            if self.check_end and not self.guide.ends_with_main(last):
                raise InputError(f"frame count differs: the processed video ends after frame {last.index} but the "
                                 f"guide {self.guide.path} has more; they must match frame for frame")
            for image in self.fuser.flush():
                yield held.pop(0).with_image(image)
        finally:
            self.guide.close()
            if previews is not None:
                previews[1].close()
            if self._own_source and self.source is not None:
                self.source.close()
        if self.fuser.cuts:
            log.info("scene cuts at frames %s", ", ".join(map(str, self.fuser.cuts)))

    def _with_guide(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, np.ndarray]]:
        """Each processed frame with its guide image, in order; through `guide_denoiser` when there is one
        (it reads a few guide frames ahead: the processed frames wait for them)."""
        if self.guide_denoiser is None:
            for frame in frames:
                original = self._guide_for(frame)
                if not self._noise_checked:
                    self._noise_checked = True
                    _warn_if_noisy(original, self.guide.path)
                yield frame, original
            return
        waiting: collections.deque[Frame] = collections.deque()

        def guide_frames() -> Iterator[Frame]:
            for frame in frames:
                waiting.append(frame)
                yield frame.with_image(self._guide_for(frame))

        for denoised in self.guide_denoiser.process(guide_frames()):
            yield waiting.popleft(), denoised.image

    def _guide_for(self, frame: Frame) -> np.ndarray:
        try:
            image = self.guide.frame_for(frame)
        except InputError as error:
            if "ends before" in str(error):
                raise InputError(f"frame count differs: the guide {self.guide.path} ends before the "
                                 "processed video; they must match frame for frame") from None
            raise
        if not is_uniform_scale(image.shape[:2], frame.image.shape[:2]):
            raise InputError(size_differs("the processed video", (frame.width, frame.height), self.guide.path,
                                          (image.shape[1], image.shape[0]), any_scale=True))
        return image

    def _debug(self, step: FusionStep) -> None:
        """Flow (colour wheel) and trust map (white = carried from the previous output, black = occluded,
        motion boundary, out of frame or photometric mismatch) of one frame, as PNGs in `debug_dir`."""
        from v2v.flow.visualize import flow_to_rgb, mask_to_rgb, write_png

        assert self.debug_dir is not None
        if step.flow is not None:
            write_png(self.debug_dir / f"flow_{step.index:05d}.png", flow_to_rgb(step.flow))
        if step.trust is not None:
            write_png(self.debug_dir / f"trust_{step.index:05d}.png", mask_to_rgb(step.trust))


def _warn_if_noisy(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """One line when a guide frame looks noisy: its flow is poor and the fuser steadies less."""
    from v2v.restore.denoise import estimate_sigma

    sigma = estimate_sigma([image])
    if sigma >= NOISY_GUIDE_SIGMA:
        log.warning("the guide %s looks noisy (noise ~%.0f on 0-255): its motion is poor and stabilize steadies "
                    "less; --guide-denoise auto denoises it first (FFDNet, slow on a CPU)", os.fspath(path), sigma)
