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
frame's mask is the soft mask thresholded at 0.5.

Re-anchoring (`Appearance`): DIS loses a small fast object with little texture (the sample's ball, 12 pixels a
frame), and a mask carried by flow alone then lags and breaks into blobs off the object. So every step also looks
for the object as drawn: the anchor's masked patch is template-matched around the flow's mask (over the whole
frame when nothing there looks like the object: it jumped), and the anchor's mask moved there replaces the flow's
when it looks more like the object. "Looks like" is a colour model of the
anchor (histograms of the masked pixels and of their surround: each pixel's chance of being the object) and a
mask's *contrast* is the mean chance inside it less the mean in a thin ring outside (a mask off the object, or
too small for it, scores low). When no mask keeps half the anchor's contrast the object is lost, and the run stops
with one line naming the frame. An object whose colours don't stand out from its surround
(`MIN_CONTRAST`) is carried by flow alone. Limits: an object that passes *behind* something keeps its mask over
the occluder until over half of it is hidden, where the run stops (give a mask video); parts that enter the frame
or appear from behind something are not added.

Memory: forward from N the propagation streams (the previous frame and its mask). Backward from N to 0 needs
the frames in reverse: they are decoded in chunks of `CHUNK` frames, from N back to 0 (each chunk a seek in the
run's `SourceFrames`, which the pipeline hands over: the clip is not reopened), so at most `CHUNK` frames are held;
the backward masks (binary PNGs, a few kB each) wait in a scratch folder until the stream reaches them. Decoding
cost: the frames before N are decoded twice (plus up to a GOP per chunk for the seeks).
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
from v2v.inpaint.masks import fit_mask, given_clip, read_mask_image
from v2v.io.source_frames import SourceFrames

log = logging.getLogger(__name__)

CHUNK = 16  # frames held at once while propagating backward
CORE = 3  # pixels: masked pixels nearer the edge than this take the flow of the nearest pixel further in
SHARPEN = 2.0  # each step steepens the soft edge around its half-way point by this factor
BINS = 16  # colour histogram bins per channel of the appearance model
RING = 4  # pixels: the ring outside a mask whose colours count against it
SURROUND = 15  # pixels: the anchor's surround, the colours that are not the object
PREFER_DRAWN = 0.05  # the drawn mask, moved, wins when its contrast beats the flow's by this share of the anchor's
LOST = 0.5  # a frame whose best mask keeps less than this share of the anchor's contrast has lost the object
MIN_CONTRAST = 0.2  # an object less distinct from its surround (1 = every colour its own) is carried by flow alone


def frames_backward(clip: SourceFrames, anchor: int, purpose: str) -> Iterator[tuple[int, np.ndarray]]:
    """(number, image) of frames anchor-1 down to 0, decoded `CHUNK` at a time (a seek each), so at most `CHUNK`
    frames are held; InputError naming `purpose` where the clip cannot be decoded. Carried and tracked masks
    share it."""
    high = anchor
    while high > 0:
        low = max(0, high - CHUNK)
        images = [frame.image for frame in clip.frames(low, high)]
        if len(images) != high - low:
            raise InputError(f"{clip.path}: could not decode frames {low} to {high - 1} to {purpose}")
        for number in range(high - 1, low - 1, -1):
            yield number, images[number - low]
        high = low


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


def box_of(inside: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom and right exclusive, of the True pixels of a non-empty bool (H, W)."""
    ys, xs = np.nonzero(inside)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


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


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """bool: the pixels within `width` pixels outside the mask (>= 0.5)."""
    import cv2

    inside = (mask >= 0.5).astype(np.uint8)
    return (cv2.dilate(inside, np.ones((2 * width + 1,) * 2, np.uint8)) > 0) & (inside == 0)


class Appearance:
    """What the object drawn on the anchor frame looks like: a colour model (which colours are the object's rather
    than its surround's) and its patch, to find it again where the flow lost it. See the module's notes. `mask`
    must mark something."""

    def __init__(self, image: np.ndarray, mask: np.ndarray) -> None:
        inside = mask >= 0.5
        codes = self._codes(image)
        counts = [np.bincount(codes[where], minlength=BINS**3).astype(np.float64) for where in
                  (inside, ring(mask, SURROUND))]
        ours, theirs = (count / max(count.sum(), 1) for count in counts)
        self.chance = (ours / np.maximum(ours + theirs, 1e-12)).astype(np.float32)  # per colour: the object's?
        self.box = box_of(inside)
        self.mask, self.image = inside.astype(np.float32), image
        self.contrast = self.contrast_of(self.object_chance(image), mask)

    @staticmethod
    def _codes(image: np.ndarray) -> np.ndarray:
        bins = (image // (256 // BINS)).astype(np.int32)
        return (bins[..., 0] * BINS + bins[..., 1]) * BINS + bins[..., 2]

    def object_chance(self, image: np.ndarray) -> np.ndarray:
        """float32 (H, W): each pixel's chance of being the object, by its colour."""
        return self.chance[self._codes(image)]

    @staticmethod
    def contrast_of(chance: np.ndarray, mask: np.ndarray) -> float:
        """Mean chance inside the mask less the mean in the `RING` outside it."""
        outside = ring(mask, RING)
        return float(chance[mask >= 0.5].mean() - (chance[outside].mean() if outside.any() else 0.0))

    def window(self, near: list[np.ndarray]) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right): where to look for the object, around the masks `near` (the previous frame's,
        the flow's) with room for the anchor's patch; None when they are empty."""
        top, bottom, left, right = self.box
        height, width = near[0].shape
        boxes = [box_of(mask >= 0.5) for mask in near if (mask >= 0.5).any()]
        if not boxes:
            return None
        margin = min(max(8, (bottom - top + right - left) // 4), 32)  # the flow says roughly where: look around it
        low_y, high_y = min(box[0] for box in boxes), max(box[1] for box in boxes)
        low_x, high_x = min(box[2] for box in boxes), max(box[3] for box in boxes)
        half_y = max(high_y - low_y, bottom - top) / 2 + margin
        half_x = max(high_x - low_x, right - left) / 2 + margin
        return (int(max((low_y + high_y) / 2 - half_y, 0)), int(min((low_y + high_y) / 2 + half_y, height)),
                int(max((low_x + high_x) / 2 - half_x, 0)), int(min((low_x + high_x) / 2 + half_x, width)))

    def relocated(self, image: np.ndarray, window: tuple[int, int, int, int] | None) -> np.ndarray | None:
        """The anchor's mask moved to where the anchor's patch matches `image` best within `window` (top, bottom,
        left, right); None where the patch does not fit in it."""
        import cv2

        top, bottom, left, right = self.box
        if window is None or window[1] - window[0] < bottom - top or window[3] - window[2] < right - left:
            return None
        y0, y1, x0, x1 = window
        patch = self.image[top:bottom, left:right]
        weight = np.repeat(self.mask[top:bottom, left:right, None], 3, axis=2)
        score = cv2.matchTemplate(image[y0:y1, x0:x1], patch, cv2.TM_SQDIFF, mask=weight)
        _, _, (best_x, best_y), _ = cv2.minMaxLoc(score)
        shift = np.float32([[1, 0, x0 + best_x - left], [0, 1, y0 + best_y - top]])
        return cv2.warpAffine(self.mask, shift, image.shape[1::-1], flags=cv2.INTER_NEAREST)

    def checked(self, previous: np.ndarray, moved: np.ndarray, image: np.ndarray) -> np.ndarray | None:
        """The mask of `image`: the flow's (`moved`, from the mask `previous` of the neighbouring frame), or the
        anchor's moved to where the object is when that looks more like it (searched near the flow's, then, if
        neither looks like the object, over the whole frame); None when nothing does (lost)."""
        if not (moved >= 0.5).any():
            return moved  # the object left the frame
        chance = self.object_chance(image)
        contrast = self.contrast_of(chance, moved)
        whole = (0, image.shape[0], 0, image.shape[1])
        for window in (self.window([previous, moved]), whole):
            found = self.relocated(image, window)
            if found is not None:
                found_contrast = self.contrast_of(chance, found)
                if found_contrast > contrast + PREFER_DRAWN * self.contrast:
                    moved, contrast = found, found_contrast
            if contrast >= LOST * self.contrast:
                return moved
        return None


class PropagatedMask:
    """A `MaskSource`: the mask image `mask` (a path or a float (H, W) 0/1 array) drawn on the clip's frame
    `frame` (counted from 0), carried forward and backward by flow. `source` is the clip: its path, a
    `SourceFrames`, or None for the run's source, which the pipeline hands over (`attach_source`). Ask `mask_for` in
    clip order; a jump ahead (a later window or segment) is caught up by decoding the frames between. `reanchor`
    False carries by flow alone (no `Appearance` check: the carrier before issue 27, kept for the benchmark)."""

    def __init__(self, source: str | os.PathLike[str] | SourceFrames | None,
                 mask: str | os.PathLike[str] | np.ndarray, frame: int = 0, *,
                 estimator: FlowEstimator | None = None, scratch: str | os.PathLike[str] | None = None,
                 reanchor: bool = True) -> None:
        self.clip = SourceFrames(source) if isinstance(source, (str, os.PathLike)) else source
        self._own_clip = isinstance(source, (str, os.PathLike))
        self.estimator = estimator or make_flow_estimator("dis", preset="fine")
        self.given = read_mask_image(mask) if not isinstance(mask, np.ndarray) else mask.astype(np.float32)
        self.anchor = frame
        self.reanchor = reanchor
        self.appearance: Appearance | None = None  # made with the scratch folder, from the anchor frame
        self.told: set[str] = set()
        self._scratch_parent = scratch
        self._scratch: Path | None = None  # made, and the masks before the anchor written, on the first mask asked
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None  # (frame number, image, mask)

    def attach_source(self, source: SourceFrames) -> None:
        self.clip = self.clip or source

    def _start(self) -> SourceFrames:
        """The clip; the first time, the anchor checked, the mask fitted to the frames and carried back to 0."""
        clip = given_clip(self.clip, "PropagatedMask")
        if self._scratch is not None:
            return clip
        total = len(clip)
        if self.anchor < 0 or self.anchor >= total:
            raise InputError.naming("{anchor} {number} is outside the clip (frames 0 to {last})", number=self.anchor,
                                    last=max(total, 1) - 1)
        anchor = clip.image(self.anchor)
        self.given = fit_mask(self.given, *anchor.shape[:2], "mask image", self.told)
        if not self.given.any():
            log.warning("the mask image is all black: nothing is edited")
        elif self.reanchor:
            self.appearance = Appearance(anchor, self.given)
            if self.appearance.contrast < MIN_CONTRAST:
                log.info("the masked object's colours are those of its surround: the mask is carried by flow alone")
                self.appearance = None
        self._scratch = Path(tempfile.mkdtemp(prefix="v2v-mask-", dir=self._scratch_parent))
        self._backward(clip)
        return clip

    def _backward(self, clip: SourceFrames) -> None:
        """Masks of frames anchor-1 .. 0 into the scratch folder, CHUNK frames decoded at a time."""
        import cv2

        if self.anchor == 0:
            return
        known = clip.image(self.anchor)
        mask = self.given
        for number, image in frames_backward(clip, self.anchor, "carry the mask back"):
            mask = self._step(mask, known, image, number)
            cv2.imwrite(str(self._stored(number)), np.rint(mask * 255).astype(np.uint8))
            known = image
        log.info("mask carried back from frame %d to frame 0", self.anchor)

    def _step(self, mask: np.ndarray, known: np.ndarray, image: np.ndarray, number: int) -> np.ndarray:
        """The soft mask of frame `number` (`image`) from `mask`, that of its neighbour `known`: carried by flow and
        re-anchored on the object's look; InputError where the object is lost."""
        moved = propagate_step(mask, known, image, self.estimator)
        if self.appearance is None:
            return moved
        checked = self.appearance.checked(mask, moved, image)
        if checked is None:
            raise InputError.naming("the mask drawn on frame {drawn} lost its object at frame {number} (it moved too "
                                    "fast or far for the flow, changed its look, or was hidden); pass a mask video or "
                                    "image sequence as {mask}, or draw the mask on a frame nearer to it ({anchor})",
                                    drawn=self.anchor, number=number)
        return checked

    def _stored(self, number: int) -> Path:
        assert self._scratch is not None
        return self._scratch / f"{number:07d}.png"

    def mask_for(self, frame: Frame) -> np.ndarray:
        clip = self._start()
        number = clip.number(frame)
        if number < self.anchor:
            mask = read_mask_image(self._stored(number))
        elif number == self.anchor:
            mask = self.given
        else:
            last = self._last
            if last is None or last[0] != number - 1:
                last = self._catch_up(clip, number - 1, last)
            mask = self._step(last[2], last[1], frame.image, number)
        self._last = (number, frame.image, mask)
        return (mask >= 0.5).astype(np.float32)

    def _catch_up(self, clip: SourceFrames, number: int, last: tuple[int, np.ndarray, np.ndarray] | None
                  ) -> tuple[int, np.ndarray, np.ndarray]:
        """The state at frame `number` (> anchor - 1), carried forward from the anchor (or from `last`, if it is
        earlier) by decoding the frames between."""
        begin = last[0] if last is not None and self.anchor <= last[0] < number else self.anchor
        state = last if begin != self.anchor else None
        for frame in clip.frames(begin, number + 1):
            if state is None:
                state = (frame.index, frame.image, self.given)
            elif frame.index > state[0]:
                state = (frame.index, frame.image, self._step(state[2], state[1], frame.image, frame.index))
        if state is None or state[0] != number:
            raise InputError(f"{clip.path}: could not decode up to frame {number} to carry the mask there")
        return state

    def masks(self) -> Iterator[tuple[Frame, np.ndarray]]:
        """Every frame of the clip with its mask, in order."""
        for frame in self._start().frames(0):
            yield frame, self.mask_for(frame)

    def close(self) -> None:
        scratch = getattr(self, "_scratch", None)  # None when __init__ failed before making it
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            self._scratch, self._last = None, None
        clip = getattr(self, "clip", None)
        if clip is not None and getattr(self, "_own_clip", False):
            clip.close()

    def __del__(self) -> None:
        self.close()
