"""Compositing: where the output may differ from the source, and by how much.

`coverage(mask, dilate, feather)` turns a 0/1 mask into the blend weight alpha (float32 (H, W) in [0, 1]):

- the mask grown by `dilate` pixels (a disc) has alpha 1;
- `feather` pixels beyond it, alpha falls linearly to 0 (at distance d outside the grown mask, 1 - d/(feather+1));
- everywhere else alpha is exactly 0.

`composite(source, filled, alpha)` is source where alpha is 0 (the very same bytes, never a VAE round trip),
filled where alpha is 1, and the rounded blend between. The region to fill is alpha > 0 (`region`).
"""

from __future__ import annotations

import numpy as np

from v2v.errors import UsageError


def check_sizes(dilate: int, feather: int) -> None:
    if dilate < 0 or feather < 0:
        raise UsageError.naming("{dilate} and {feather} take pixels >= 0, got dilate {grow} and feather {soft}",
                                grow=dilate, soft=feather)


def coverage(mask: np.ndarray, dilate: int = 0, feather: int = 0) -> np.ndarray:
    """The blend weight (float32 (H, W) in [0, 1]) of a 0/1 mask after growing it by `dilate` and feathering
    `feather` pixels outward."""
    import cv2

    check_sizes(dilate, feather)
    inside = (mask >= 0.5).astype(np.uint8)
    if dilate and inside.any():
        inside = cv2.dilate(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2))
    alpha = inside.astype(np.float32)
    if feather and inside.any() and not inside.all():
        distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)  # to the nearest pixel of the grown mask
        alpha = np.clip(1.0 - distance / (feather + 1), 0.0, 1.0).astype(np.float32)
    return alpha


def region(alpha: np.ndarray) -> np.ndarray:
    """The pixels a fill must provide (alpha > 0), as a bool (H, W) array."""
    return alpha > 0


def composite(source: np.ndarray, filled: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB uint8: `source` where alpha is 0 (exactly), `filled` where alpha is 1, the rounded blend between."""
    weight = alpha[..., None]
    blend = np.rint(source.astype(np.float32) * (1 - weight) + filled.astype(np.float32) * weight)
    out = np.where(weight > 0, np.clip(blend, 0, 255).astype(np.uint8), source)
    return np.ascontiguousarray(out)
