"""Flow-based fill: paint the masked region of a frame with what other frames show there.

For a frame t and its hole H_t (the pixels to fill, mask after dilate/feather), neighbours s = t±1, t±2, ...,
t±`radius` are tried nearest first:

1. flow t -> s (DIS, estimated at most `FLOW_SIDE` pixels wide: the background's motion is smooth) between the two
   frames with their holes first filled by Telea (`guide`): with the object still in, its own motion pulls the flow
   around it along (on bikes.mp4 this alone took the fill from -2.9 dB to +2.7 dB against Telea over the hole).
   Inside the hole the flow is then *completed*: replaced by a smooth interpolation of the flow around it
   (`masked_lowpass`, normalised convolution at 1/16 of the width; a band of `BAND` pixels around the hole is left
   out). This beat a pyramid fill from the hole's edge and a RANSAC homography on bikes.mp4;
2. frame s warped onto t by the completed flow; a pixel counts where it lands inside s and outside s's own hole
   (so the object is never copied back in);
3. its alignment is checked on a ring of `RING` pixels around the hole (where the frame itself is known): the luma
   error there, spread into the hole, must stay under `MISFIT`, else that neighbour is not used there;
4. each hole pixel takes the mean of the first two neighbours that pass, if they agree (luma within `DISAGREE`):
   a pixel two frames show differently is where a flow guessed from around the hole is likely wrong (the hole over
   something that moves unlike its surroundings), and is left; a pixel only one neighbour shows takes it.

Neighbours across a scene cut (`v2v.scenes.is_cut`) are never used. What is left (`remaining`) goes to OpenCV's
Telea inpainting when there is no model, or to the diffusion model, which then paints only that.

`FillWindow` runs this over a stream with a bounded buffer: frame t comes out once t+`radius` has arrived (the
stage declares `Context(before=radius, after=radius)`), so memory is 2*radius+1 frames (and their guides).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator

import numpy as np

from v2v.flow import FlowEstimator, make_flow_estimator
from v2v.flow.warp import flow_to_planes, resize_flow
from v2v.frames import LUMA, Frame
from v2v.scenes import is_cut

log = logging.getLogger(__name__)

RADIUS = 8  # frames each side a hole is filled from
BAND = 3  # pixels around a hole whose flow is not trusted for the completion
COMPLETION_SCALE = 1 / 16  # smoothing length of the flow completion, a fraction of the frame's width
RING = 8  # pixels around the hole (beyond BAND) where each neighbour's alignment is checked
MISFIT = 0.05  # mean luma error (0-1) around the hole above which a neighbour is not used there
FLOW_SIDE = 480  # flows for the fill are estimated at most this many pixels on the longer side
DISAGREE = 0.25  # luma (0-1) by which the two nearest neighbours showing a pixel may differ
LUMA_WEIGHTS = np.float32(LUMA)


def spread(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(H, W, C) float values known where `weight` (H, W) is 1, spread smoothly over the rest (`masked_lowpass`,
    normalised convolution at `COMPLETION_SCALE`, in numpy on the calling thread)."""
    from v2v.consistency import masked_lowpass

    planes = np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)[None]
    mass = weight.astype(np.float32)[None, None]
    return np.asarray(masked_lowpass(planes, mass, COMPLETION_SCALE))[0].transpose(1, 2, 0)


def complete_flow(flow: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`flow` (H, W, 2) with the hole's vectors (and a band of `BAND` pixels around it) replaced by a smooth
    interpolation of the flow around it (`masked_lowpass`, normalised convolution at `COMPLETION_SCALE`)."""
    import cv2

    grown = cv2.dilate(hole.astype(np.uint8), np.ones((2 * BAND + 1,) * 2, np.uint8)) > 0
    if grown.all():
        return np.zeros_like(flow)
    return np.where(grown[..., None], spread(flow, ~grown), flow).astype(np.float32)


def scaled_flow(estimator: FlowEstimator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow a -> b (H, W, 2), estimated at most `FLOW_SIDE` pixels on the longer side and scaled back."""
    import cv2

    height, width = a.shape[:2]
    factor = min(1.0, FLOW_SIDE / max(height, width))
    if factor == 1.0:
        return estimator(a, b)
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    shrink = cv2.INTER_AREA
    small = estimator(cv2.resize(a, size, interpolation=shrink), cv2.resize(b, size, interpolation=shrink))
    return np.ascontiguousarray(resize_flow(flow_to_planes(small), (height, width))[0].transpose(1, 2, 0))


def fill_from_neighbours(image: np.ndarray, hole: np.ndarray,
                         neighbours: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                         estimator: FlowEstimator, guide: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill `hole` (bool (H, W)) of `image` (RGB uint8) from `neighbours` [(distance in frames, image, hole, guide)]
    (a guide: the image with its hole filled by `telea`, what the flow is estimated on; `guide` is this image's).

    Returns (the image with the hole pixels that neighbours show filled in, the hole pixels left).
    """
    import cv2

    out = image.copy()
    if not hole.any():
        return out, hole.copy()
    guide = telea(image, hole) if guide is None else guide
    height, width = hole.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # the ring around the hole where a neighbour's alignment can be checked against the frame itself
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((2 * BAND + 1,) * 2, np.uint8))
    ring = (cv2.dilate(grown, np.ones((2 * RING + 1,) * 2, np.uint8)) > 0) & (grown == 0)
    luma = image.astype(np.float32) @ LUMA_WEIGHTS / 255
    shown = [np.zeros(image.shape, np.float32) for _ in range(2)]  # the first two neighbours' pixels that pass
    count = np.zeros(hole.shape, np.int32)
    for _, other, other_hole, other_guide in sorted(neighbours, key=lambda item: (abs(item[0]), item[0])):
        flow = complete_flow(scaled_flow(estimator, guide, other_guide), hole)
        map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
        warped = cv2.remap(other, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        theirs = cv2.remap(other_hole.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        valid = (theirs < 1e-3) & inside
        # how well this neighbour lines up around the hole, spread into it: a neighbour whose warp misses
        # (the hole spans another motion than its surroundings) is not copied in
        checked = ring & valid
        error = np.abs(warped @ LUMA_WEIGHTS / 255 - luma)
        misfit = spread(error[..., None], checked.astype(np.float32))[..., 0] if checked.any() else 1.0
        usable = hole & valid & (misfit < MISFIT) & (count < 2)
        for rank, pixels in enumerate(shown):
            take = usable & (count == rank)
            pixels[take] = warped[take]
        count[usable] += 1
        if (count[hole] >= 2).all():
            break
    # a pixel two neighbours show differently is where a flow guessed from around the hole is likely wrong
    agree = (count < 2) | (np.abs((shown[0] - shown[1]) @ LUMA_WEIGHTS) <= DISAGREE * 255)
    filled = hole & (count > 0) & agree
    mean = np.where((count > 1)[..., None], (shown[0] + shown[1]) / 2, shown[0])
    out[filled] = np.clip(np.rint(mean[filled]), 0, 255).astype(np.uint8)
    return out, hole & ~filled


def telea(image: np.ndarray, hole: np.ndarray, radius: int = 5) -> np.ndarray:
    """OpenCV's Telea inpainting of `hole` (bool (H, W)) in `image` (RGB uint8)."""
    import cv2

    if not hole.any():
        return image
    return cv2.inpaint(image, hole.astype(np.uint8), radius, cv2.INPAINT_TELEA)


class FillWindow:
    """Flow fill over a stream: feed (frame, hole) in order, get (frame, filled image, remaining hole) in order,
    `radius` frames later (the buffer holds 2*radius+1 frames)."""

    def __init__(self, radius: int = RADIUS, estimator: FlowEstimator | None = None) -> None:
        self.radius = radius
        self.estimator = estimator or make_flow_estimator("dis", preset="medium")
        self.filled_pixels = self.hole_pixels = 0

    def process(self, items: Iterator[tuple[Frame, np.ndarray]]) -> Iterator[tuple[Frame, np.ndarray, np.ndarray]]:
        window: collections.deque[tuple[Frame, np.ndarray, np.ndarray, int]] = collections.deque()
        done = 0  # position in `window` of the next frame to fill
        shot, previous = 0, None
        for frame, hole in items:
            if previous is not None and is_cut(previous, frame.image):
                shot += 1  # nothing is taken across a scene cut
            previous = frame.image
            window.append((frame, hole, telea(frame.image, hole), shot))
            while done < len(window) and len(window) - 1 - done >= self.radius:
                yield self._fill(window, done)
                done += 1
                if done > self.radius:
                    window.popleft()
                    done -= 1
        while done < len(window):
            yield self._fill(window, done)
            done += 1

    def _fill(self, window: collections.deque[tuple[Frame, np.ndarray, np.ndarray, int]], position: int
              ) -> tuple[Frame, np.ndarray, np.ndarray]:
        frame, hole, guide, shot = window[position]
        neighbours = [(other.index - frame.index, other.image, other_hole, other_guide)
                      for offset, (other, other_hole, other_guide, other_shot) in enumerate(window)
                      if offset != position and abs(offset - position) <= self.radius and other_shot == shot]
        filled, missing = fill_from_neighbours(frame.image, hole, neighbours, self.estimator, guide)
        self.hole_pixels += int(hole.sum())
        self.filled_pixels += int(hole.sum() - missing.sum())
        return frame, filled, missing
