"""The one scene-cut detector of v2v: fusion, keyframes, cross-frame attention and interpolation all ask it.

`is_cut(previous, current)` compares two consecutive frames (RGB uint8 (H, W, 3)) by the L1 distance of their
32-bin luma histograms (0 = same, 2 = disjoint): motion barely moves a histogram, a new shot does.
"""

from __future__ import annotations

import numpy as np

CUT_THRESHOLD = 0.6


def luma_histogram(image: np.ndarray, bins: int = 32) -> np.ndarray:
    """Normalised luma histogram of an RGB uint8 (H, W, 3) image."""
    import cv2

    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    counts = cv2.calcHist([luma], [0], None, [bins], [0, 256]).ravel()
    return counts / max(float(counts.sum()), 1.0)


def is_cut(previous: np.ndarray, current: np.ndarray, threshold: float = CUT_THRESHOLD) -> bool:
    """Whether two consecutive frames straddle a scene cut."""
    return float(np.abs(luma_histogram(previous) - luma_histogram(current)).sum()) > threshold
