"""One mask, drawn on frame N, carried through the clip by the source's optical flow, with occlusion handling.

One step, from frame p (whose mask is known) to a neighbouring frame c (either direction):

1. the source's optical flow p -> c (`v2v.flow`, DIS at full resolution: the "fine" preset; the coarser presets
   underestimate a small object's motion, and a lag of a tenth of a pixel a frame adds up);
2. each masked pixel of p takes the flow of the nearest pixel of the mask's core (the mask eroded by `CORE`
   pixels): flow is blurred across the object's edge, and the edge must move with the object, not the background;
3. the mask is moved *forward* (splatted bilinearly onto c). This is the occlusion handling: background uncovered
   behind the object (hidden in p) is never marked, since nothing moves there, where pulling c's pixels back by
   the flow c -> p would read the object that hid them; pixels the object moves onto are marked; what leaves
   the frame is dropped. One-pixel holes of a stretching object are closed.

The mask is carried soft (in [0, 1], so sub-pixel motion accumulates instead of rounding away) and its edge is
steepened around its half-way point at every step (`SHARPEN`), so it does not spread out over a long clip; each
frame's mask is the soft mask thresholded at 0.5. Limits: an object that passes *behind* something keeps its
mask over the occluder (the fill then repaints the occluder too: dilate less or give a mask video); parts that
enter the frame or appear from behind something are not added.

Memory: forward from N the propagation streams (the previous frame and its mask). Backward from N to 0 needs
the frames in reverse: they are decoded in chunks of `CHUNK` frames, from N back to 0 (each chunk reopens the clip
with a seek), so at most `CHUNK` frames are held; the backward masks (binary PNGs, a few kB each) wait in a scratch
folder until the stream reaches them. Decoding cost: the frames before N are decoded twice (plus up to a GOP per
chunk for the seeks).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from v2v.errors import InputError
from v2v.flow import FlowEstimator, make_flow_estimator
from v2v.frames import Frame
from v2v.inpaint.masks import ClipFrames, fit_mask, read_mask_image

log = logging.getLogger(__name__)

CHUNK = 16  # frames held at once while propagating backward
CORE = 3  # pixels: masked pixels nearer the edge than this take the flow of the nearest pixel further in
SHARPEN = 2.0  # each step steepens the soft edge around its half-way point by this factor


def object_flow(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`flow` (H, W, 2) with each masked pixel's vector replaced by the one at the nearest pixel of the mask's core
    (the mask eroded by `CORE` pixels): flow is blurred across an object's edge, its interior is not."""
    import cv2

    inside = (mask >= 0.5).astype(np.uint8)
    core = cv2.erode(inside, np.ones((2 * CORE + 1,) * 2, np.uint8))
    if not core.any():
        core = inside
    if not core.any():
        return flow
    # every pixel's nearest core pixel: labels number the zero pixels of the input in raster order, from 1
    _, labels = cv2.distanceTransformWithLabels(1 - core, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(core)
    nearest = labels - 1
    out = flow.copy()
    edge = (mask > 0) & (core == 0)
    out[edge] = flow[ys[nearest[edge]], xs[nearest[edge]]]
    return out


def splat(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Forward-splat a soft mask (float32 (H, W) in [0, 1]) by `flow` (H, W, 2, from the mask's frame to the
    target frame): each pixel's weight is shared bilinearly among the four pixels around where the flow takes it.
    Returns float32 (H, W) in [0, 1], one-pixel holes closed."""
    import cv2

    height, width = mask.shape
    ys, xs = np.nonzero(mask > 1e-3)
    out = np.zeros(height * width, np.float64)
    if len(xs):
        weight = mask[ys, xs].astype(np.float64)
        tx, ty = xs + flow[ys, xs, 0].astype(np.float64), ys + flow[ys, xs, 1].astype(np.float64)
        x0, y0 = np.floor(tx).astype(np.int64), np.floor(ty).astype(np.int64)
        fx, fy = tx - x0, ty - y0
        for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                              (1, 1, fx * fy)):
            cx, cy = x0 + dx, y0 + dy
            inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
            out += np.bincount(cy[inside] * width + cx[inside], (weight * share)[inside], minlength=height * width)
    moved = np.clip(out.reshape(height, width), 0, 1).astype(np.float32)
    return cv2.morphologyEx(moved, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))


def propagate_step(mask: np.ndarray, known: np.ndarray, target: np.ndarray, estimator: FlowEstimator) -> np.ndarray:
    """The soft mask (float32 (H, W) in [0, 1]; threshold at 0.5 to use it) of frame `target` (RGB uint8) from the
    soft mask `mask` of the neighbouring frame `known`: moved forward by the object's own motion."""
    flow = estimator(known, target)
    moved = splat(mask, object_flow(mask, flow))
    return np.clip((moved - 0.5) * SHARPEN + 0.5, 0, 1)  # keeps the half-way edge, stops it spreading out


def read_frames(source: str | os.PathLike[str], first: int, count: int) -> list[np.ndarray]:
    """Frames first .. first+count-1 of the clip (RGB uint8), decoded from a seek."""
    from v2v.io.probe import time_of_frame
    from v2v.io.reader import open_source

    start = time_of_frame(source, first) if first else 0.0
    with open_source(source, start=max(0.0, start - 1e-4), max_frames=count) as reader:
        return [frame.image for frame in reader]


class PropagatedMask:
    """A `MaskSource`: the mask image `mask` (a path or a float (H, W) 0/1 array) drawn on the clip's frame
    `frame` (counted from 0), carried forward and backward by flow. Ask `mask_for` in clip order; a jump ahead
    (a later window or segment) is caught up by decoding the frames between."""

    def __init__(self, source: str | os.PathLike[str], mask: str | os.PathLike[str] | np.ndarray, frame: int = 0,
                 *, estimator: FlowEstimator | None = None, clip: ClipFrames | None = None,
                 scratch: str | os.PathLike[str] | None = None) -> None:
        from v2v.io.reader import open_source

        self.source = os.fspath(source)
        self.clip = clip or ClipFrames(source)
        self.estimator = estimator or make_flow_estimator("dis", preset="fine")
        with open_source(self.source) as reader:
            self.width, self.height = reader.info.width, reader.info.height
        total = len(self.clip) if len(self.clip) else None
        if frame < 0 or (total is not None and frame >= total):
            raise InputError(f"--mask-frame {frame} is outside the clip (frames 0 to {(total or 1) - 1})")
        given = read_mask_image(mask) if not isinstance(mask, np.ndarray) else mask.astype(np.float32)
        self.told: set[str] = set()
        self.anchor = frame
        self.given = fit_mask(given, self.height, self.width, "mask image", self.told)
        if not self.given.any():
            log.warning("the mask image is all black: nothing is edited")
        self._scratch = Path(tempfile.mkdtemp(prefix="v2v-mask-", dir=scratch))
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None  # (frame number, image, mask)
        self._backward()

    def _backward(self) -> None:
        """Masks of frames anchor-1 .. 0 into the scratch folder, CHUNK frames decoded at a time."""
        import cv2

        if self.anchor == 0:
            return
        known = read_frames(self.source, self.anchor, 1)[0]
        mask = self.given
        high = self.anchor
        while high > 0:
            low = max(0, high - CHUNK)
            images = read_frames(self.source, low, high - low)
            for number in range(high - 1, low - 1, -1):
                image = images[number - low]
                mask = propagate_step(mask, known, image, self.estimator)
                cv2.imwrite(str(self._stored(number)), np.rint(mask * 255).astype(np.uint8))
                known = image
            high = low
        log.info("mask carried back from frame %d to frame 0", self.anchor)

    def _stored(self, number: int) -> Path:
        return self._scratch / f"{number:07d}.png"

    def mask_for(self, frame: Frame) -> np.ndarray:
        number = self.clip.number(frame)
        if number < self.anchor:
            mask = read_mask_image(self._stored(number))
        elif number == self.anchor:
            mask = self.given
        else:
            last = self._last
            if last is None or last[0] != number - 1:
                last = self._catch_up(number - 1, last)
            mask = propagate_step(last[2], last[1], frame.image, self.estimator)
        self._last = (number, frame.image, mask)
        return (mask >= 0.5).astype(np.float32)

    def _catch_up(self, number: int, last: tuple[int, np.ndarray, np.ndarray] | None) -> tuple[int, np.ndarray,
                                                                                                np.ndarray]:
        """The state at frame `number` (> anchor - 1), carried forward from the anchor (or from `last`, if it is
        earlier) by decoding the frames between."""
        from v2v.io.probe import time_of_frame
        from v2v.io.reader import open_source

        begin = last[0] if last is not None and self.anchor <= last[0] < number else self.anchor
        state = last if begin != self.anchor else None
        start = time_of_frame(self.source, begin) if begin else 0.0
        with open_source(self.source, start=max(0.0, start - 1e-4), max_frames=number - begin + 1) as reader:
            for offset, frame in enumerate(reader):
                current = begin + offset
                if state is None:
                    state = (current, frame.image, self.given)
                elif current > state[0]:
                    state = (current, frame.image, propagate_step(state[2], state[1], frame.image, self.estimator))
        if state is None or state[0] != number:
            raise InputError(f"{self.source}: could not decode up to frame {number} to carry the mask there")
        return state

    def masks(self) -> Iterator[tuple[Frame, np.ndarray]]:
        """Every frame of the clip with its mask, in order."""
        from v2v.io.reader import open_source

        with open_source(self.source) as reader:
            for frame in reader:
                yield frame, self.mask_for(frame)

    def close(self) -> None:
        scratch = getattr(self, "_scratch", None)  # None when __init__ failed before making it
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def __del__(self) -> None:
        self.close()
