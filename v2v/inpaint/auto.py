"""Automatic masks (`--auto person|salient`, `--mask auto:person`), steadied in time.

A segmentation network (`v2v.inpaint.segment`) gives each frame its own chance map; thresholded frame by frame its
edge flickers (a pixel or two of jitter, whole limbs in and out). `AutoMask` steadies it along the source's motion:

1. the chance map and the frame are taken to a working grid (longest side `GRID` pixels: the networks see 256x144
   to 320x320, so nothing finer is lost);
2. the source's optical flow between the previous frame and this one, both ways (DIS, "fast") gives where each
   pixel was, and how far that can be trusted (`v2v.consistency.fusion.flow_trust`: the forward-backward and
   outside tests, softened by how well the warped previous frame matches);
3. the fused chance is this frame's chance moved towards the previous fused chance warped along the flow: by
   `FUSION` where the flow is trusted and the network unsure (chance near one half), by nothing where the flow
   fails or the network is sure (so a fast object's wake does not linger). An average along motion: the edge
   follows the object instead of lagging behind it, and a pixel that appears from behind something takes this
   frame's chance alone;
4. hysteresis: a pixel is in the mask when its fused chance is at least `HIGH`, or at least `LOW` and it was in the
   previous mask (warped along the flow); so an edge hovering near one half does not blink.

Scene cuts (`v2v.scenes`, with the flow's trusted fraction) and any jump in the frames asked (a window, a segment)
start the fusion afresh: a new shot's first mask is its network's own.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from v2v.frames import Frame
from v2v.inpaint.segment import Segmenter, make_segmenter
from v2v.pipeline import Context

log = logging.getLogger(__name__)

GRID = 320  # pixels: the longest side of the grid the chances are fused on
FLOW_PRESET = "fast"  # DIS preset of the flow the chances are fused along
FUSION = 0.6  # how far each frame's chance moves towards the previous fused chance (where the flow is trusted)
HIGH, LOW = 0.6, 0.4  # hysteresis: enter the mask at HIGH, leave it below LOW
SURE = 2.0  # how fast the fusion fades as the network grows sure (see `_steady`)
TOLERANCE = 0.1  # luma mismatch of the warped previous frame at which the flow's trust falls to 0
WARMUP = 8  # frames a segment starts before its own to settle the fusion (the state reaches further: inexact)


def grid_size(height: int, width: int, longest: int = GRID) -> tuple[int, int]:
    """(width, height) of the working grid: the frame scaled so its longest side is at most `longest`."""
    scale = min(1.0, longest / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


class AutoMask:
    """A `MaskSource`: each frame's mask of `kind` ("person", "salient", or a `Segmenter`), steadied in time (see the
    module docs). `fusion` 0 gives the network's own per-frame masks (thresholded at one half), for comparison.
    Ask `mask_for` in clip order."""

    context = Context(before=WARMUP, exact=False)

    def __init__(self, kind: str | Segmenter, *, fusion: float = FUSION, high: float = HIGH, low: float = LOW,
                 estimator: Any = None) -> None:
        if not 0 <= fusion < 1:
            from v2v.errors import ParameterError

            raise ParameterError.naming("{fusion} must be in [0, 1), got {value}", value=fusion)
        self.kind = kind if isinstance(kind, str) else type(kind).__name__
        self.segmenter = make_segmenter(kind) if isinstance(kind, str) else kind
        self.fusion, self.high, self.low = fusion, high, low
        self._estimator = estimator
        self.restarts = 0  # shots (and jumps) the fusion started afresh at: the first frame counts
        self._state: dict[str, Any] | None = None

    @property
    def estimator(self) -> Any:
        if self._estimator is None:
            from v2v.flow import make_flow_estimator

            self._estimator = make_flow_estimator("dis", preset=FLOW_PRESET)
        return self._estimator

    def chance(self, image: np.ndarray) -> np.ndarray:
        """This frame's own chance map (float32 (H, W) in [0, 1], the frame's size), before any fusion."""
        import cv2

        height, width = image.shape[:2]
        return cv2.resize(self.segmenter.chance(image), (width, height), interpolation=cv2.INTER_LINEAR)

    def mask_for(self, frame: Frame) -> np.ndarray:
        import cv2

        image = frame.image
        height, width = image.shape[:2]
        size = grid_size(height, width)
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        chance = cv2.resize(self.segmenter.chance(image), size, interpolation=cv2.INTER_LINEAR)
        margin = self._steady(frame, small, chance)
        # the margin's zero crossing, scaled up, is the mask's edge: finer than the grid's pixels
        return (cv2.resize(margin, (width, height), interpolation=cv2.INTER_LINEAR) >= 0).astype(np.float32)

    def _steady(self, frame: Frame, small: np.ndarray, chance: np.ndarray) -> np.ndarray:
        """The margin (float32 (h, w) on the working grid) by which each pixel is in the mask: the fused chance less
        the threshold it must reach (`LOW` where the previous mask was, else `HIGH`; one half without fusion); the
        state moved on to this frame."""
        from v2v.scenes import signature, signatures_cut

        state, number = self._state, frame.source_index
        current = signature(small)
        fused, threshold = chance, np.float32(0.5 if self.fusion == 0 else (self.high + self.low) / 2)
        restart = True
        if self.fusion > 0 and state is not None and number is not None and number == state["number"] + 1:
            trust, trusted, back = self._trust(state["small"], small)
            if not signatures_cut(state["signature"], current, trusted):
                warped = self._warp(np.stack([state["fused"], state["inside"]]), back)
                doubt = 1 - np.abs(2 * chance - 1) ** SURE  # 0 where the network is sure, 1 at one half
                fused = chance + self.fusion * trust * doubt * (warped[0] - chance)
                threshold = np.where(warped[1] >= 0.5, np.float32(self.low), np.float32(self.high))
                restart = False
        self.restarts += restart
        margin = (fused - threshold).astype(np.float32)
        self._state = {"number": number, "small": small, "signature": current, "fused": fused,
                       "inside": (margin >= 0).astype(np.float32)}
        return margin

    def _trust(self, previous: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Trust (H, W) of the flow from this frame back to the previous one, the fraction passing its tests, and
        that flow ((1, 2, H, W): where each pixel of this frame was)."""
        from v2v.consistency.fusion import flow_trust
        from v2v.flow.warp import flow_to_planes

        back, forward = self.estimator.pair(small, previous)  # this -> previous, previous -> this
        back_planes, forward_planes = flow_to_planes(back), flow_to_planes(forward)
        trust, trusted = flow_trust(back_planes, forward_planes, _luma(previous), _luma(small), TOLERANCE)
        return trust[0, 0], trusted, back_planes

    @staticmethod
    def _warp(planes: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """(C, H, W) planes warped along `flow` (1, 2, H, W)."""
        from v2v.flow.warp import warp_by_flow

        return warp_by_flow(planes[None].astype(np.float32), flow)[0]

    def close(self) -> None:
        self._state = None


def _luma(image: np.ndarray) -> np.ndarray:
    """(1, 1, H, W) float32 luma in [0, 1] of an RGB uint8 image."""
    import cv2

    return (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1 / 255))[None, None]
