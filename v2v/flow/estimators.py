"""Optical-flow estimators behind one interface.

`estimator(a, b)` takes two RGB uint8 (H, W, 3) images and returns the flow from `a` to `b` as float32
(H, W, 2) in pixels (dx, dy): pixel x of `a` is at x + flow(x) in `b` (see `v2v.flow.warp`).
`estimator.pair(a, b)` returns both directions (a -> b, b -> a), which RAFT computes in one batch.

- `DISFlow`: OpenCV's Dense Inverse Search on grayscale, CPU, a few milliseconds a pair at 640x272.
- `RAFTFlow` (`v2v.flow.raft`): torchvision's RAFT with the original checkpoints; slower, more accurate,
  on CUDA when present.

`v2v.flow.factory` makes an estimator by name; this module holds the interface and the estimators, so that
`v2v.flow.raft` can subclass `FlowEstimator` without an import cycle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from v2v.errors import UsageError, require
from v2v.frames import check_image

DIS_PRESETS = ("ultrafast", "fast", "medium", "fine")


class FlowEstimator:
    """Base of the estimators: subclasses implement `__call__(a, b) -> (H, W, 2)`."""

    name = "flow"

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flows a -> b and b -> a, float32 (H, W, 2) each."""
        return self(a, b), self(b, a)


def check_pair(a: np.ndarray, b: np.ndarray, what: str = "flow needs two images of one size") -> None:
    """Raise TypeError unless both follow the pixel contract, ValueError (starting with `what`) unless
    they have one size."""
    check_image(a)
    check_image(b)
    if a.shape != b.shape:
        raise ValueError(f"{what}, got {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")


class DISFlow(FlowEstimator):
    """OpenCV DIS optical flow on the luma of RGB uint8 images (CPU).

    Args:
        preset: "ultrafast", "fast" (default) or "medium": OpenCV's speed/accuracy presets; "fine": medium down
            to full resolution (the presets stop at 1/2 or 1/4 and upsample, which underestimates small objects'
            motion: a textured 36-pixel square moving 3 pixels a frame reads 2.8 at medium, 1.4 at fast).
    """

    name = "dis"

    def __init__(self, preset: str = "fast") -> None:
        cv2: Any = require("cv2", "torch")
        if preset not in DIS_PRESETS:
            raise UsageError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self._cv2 = cv2
        code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, "fine": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
        self._dis = cv2.DISOpticalFlow_create(code)
        if preset == "fine":
            self._dis.setFinestScale(0)

    def gray(self, image: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(image, self._cv2.COLOR_RGB2GRAY)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        check_pair(a, b)
        return self._dis.calc(self.gray(a), self.gray(b), None)

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_pair(a, b)
        ga, gb = self.gray(a), self.gray(b)  # convert once for both directions
        return self._dis.calc(ga, gb, None), self._dis.calc(gb, ga, None)
