"""Frame: one picture plus where it sits in time.

Pixel contract, one for all of v2v:

- At the edges (readers, writers, the public API, `Stage.process`) `Frame.image` is RGB, uint8, a
  C-contiguous numpy array of shape (H, W, 3).
- Stages that compute with torch convert at their own boundary with `images_to_tensor` /
  `tensor_to_images`: float (B, 3, H, W) in [0, 1], on the stage's device.

Timing is carried, never recomputed: `pts` is the source's presentation timestamp in units of
`time_base`, exactly as the decoder gave it, so variable frame rate survives a pass through v2v. A stage that
makes new frames (interpolation) gives them exact instants in a time base that can express them.

Position is two things: `index` is where the frame sits in the output (0, 1, 2, ... as a single pass over
the run's window counts them), `source_index` which source frame it came from (counted from the window's first
frame, as a single pass counts them), or None for a frame no source frame stands for (an interpolated one).
Readers give both the same value; side inputs and control videos are looked up by `source_index` or by time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LUMA = (0.299, 0.587, 0.114)  # R, G, B weights of luma (Rec. 601), as cv2.COLOR_RGB2GRAY and kornia's rgb_to_grayscale


@dataclasses.dataclass(frozen=True)
class Frame:
    """One RGB uint8 (H, W, 3) picture, its position `index` in the output, the source frame it came from
    (`source_index`, None for a made frame), and its `pts`/`time_base`."""

    image: np.ndarray
    index: int
    pts: int | None = None
    time_base: Fraction | None = None
    source_index: int | None = -1  # -1: the same as `index` (a frame read from a source); None: a made frame

    def __post_init__(self) -> None:
        if self.source_index == -1:
            object.__setattr__(self, "source_index", self.index)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def time(self) -> float | None:
        """Presentation time in seconds, or None for sources without timing."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    def with_image(self, image: np.ndarray) -> Frame:
        """The same moment in time with new pixels (which must follow the pixel contract)."""
        check_image(image)
        return dataclasses.replace(self, image=image)


def check_image(image: np.ndarray) -> None:
    """Raise TypeError unless `image` follows the pixel contract (RGB uint8 (H, W, 3))."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise TypeError(f"a frame's image must be an RGB uint8 numpy array of shape (H, W, 3), got {got}")


def images_to_tensor(
    images: Sequence[np.ndarray], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Stack RGB uint8 (H, W, 3) arrays into a float (B, 3, H, W) tensor in [0, 1] on `device`: uploaded as uint8
    (from pinned memory to a CUDA device, so the copy runs asynchronously) and converted there."""
    import torch

    batch = torch.from_numpy(np.stack(images))
    if torch.device(device).type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    return batch.permute(0, 3, 1, 2).to(dtype or torch.float32).div_(255.0)


def tensor_to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """Float (B, 3, H, W) in [0, 1] back to RGB uint8 (H, W, 3) arrays (rounded, clamped; converted to uint8 on the
    tensor's device, so a quarter of the bytes come down)."""
    import torch

    pixels = batch.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu()
    return [np.ascontiguousarray(image) for image in pixels.permute(0, 2, 3, 1).numpy()]
