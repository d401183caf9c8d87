"""Pictures of flow for debugging: the usual colour wheel (hue = direction, saturation = speed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """Float (H, W, 2) flow in pixels -> RGB uint8 (H, W, 3) (torchvision's colour wheel, normalised by
    the largest motion in the field)."""
    import torch
    from torchvision.utils import flow_to_image

    tensor = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)
    return np.ascontiguousarray(flow_to_image(tensor).permute(1, 2, 0).numpy())


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """Float or bool (H, W) in [0, 1] -> grey RGB uint8 (H, W, 3)."""
    grey = (np.clip(np.asarray(mask, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) image as PNG."""
    import cv2

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"{path}: could not write PNG")
