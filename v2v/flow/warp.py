"""Backward warping by optical flow (a function and its module twin, kornia style).

Flow convention, one for all of v2v: a flow field from image A to image B says, for every pixel x of A,
where it went in B: x + flow(x). Tensors are float (B, 2, H, W) in pixels, channel 0 = dx, channel 1 = dy;
numpy arrays are float32 (H, W, 2) in the same order (what OpenCV returns).

Backward warping pulls B into A's frame: `warp_by_flow(B, flow_A_to_B)(x) = B(x + flow(x))`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

_GRIDS: dict[tuple[int, int, str, torch.dtype], torch.Tensor] = {}


def flow_to_tensor(flow: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A numpy (H, W, 2) or (B, H, W, 2) flow, or a tensor already (B, 2, H, W), as float (B, 2, H, W)."""
    if isinstance(flow, torch.Tensor):
        return flow.to(device=device, dtype=dtype)
    array = np.asarray(flow, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype).permute(0, 3, 1, 2)


def _base_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel coordinates (1, 2, H, W): channel 0 = x, channel 1 = y (cached: the stage warps every frame)."""
    key = (height, width, str(device), dtype)
    grid = _GRIDS.get(key)
    if grid is None:
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype),
            indexing="ij",
        )
        grid = torch.stack([xs, ys])[None]
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        _GRIDS[key] = grid
    return grid


def warp_by_flow(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
                 padding_mode: str = "border") -> torch.Tensor:
    """Backward-warp `image` by `flow`: out(x) = image(x + flow(x)).

    Args:
        image: float (B, C, H, W), any range (RGB in [0, 1], flow fields, masks).
        flow: float (B, 2, H, W) in pixels (dx, dy), from the output's frame into `image`'s frame.
        mode: "bilinear" or "nearest".
        padding_mode: what to sample outside the image ("border", "zeros", "reflection").

    Returns:
        float (B, C, H, W), same dtype as `image`. Zero flow returns `image` unchanged.
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected image (B, C, H, W) and flow (B, 2, H, W), got {tuple(image.shape)} and "
                         f"{tuple(flow.shape)}")
    if image.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"image is {tuple(image.shape[-2:])} but flow is {tuple(flow.shape[-2:])} (H, W)")
    height, width = image.shape[-2:]
    coords = _base_grid(height, width, flow.device, flow.dtype) + flow
    # grid_sample wants (x, y) in [-1, 1] with align_corners=True mapping -1/1 to the centres of the edge pixels
    scale_x = 2.0 / max(width - 1, 1)
    scale_y = 2.0 / max(height - 1, 1)
    grid = torch.stack([coords[:, 0] * scale_x - 1.0, coords[:, 1] * scale_y - 1.0], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)


class FlowWarp(torch.nn.Module):
    """Module twin of `warp_by_flow`: `FlowWarp()(image (B, C, H, W), flow (B, 2, H, W)) -> (B, C, H, W)`."""

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border") -> None:
        super().__init__()
        self.mode = mode
        self.padding_mode = padding_mode

    def forward(self, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return warp_by_flow(image, flow, self.mode, self.padding_mode)


@contextlib.contextmanager
def single_threaded(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (no-op for other devices).

    Elementwise work on a frame is memory-bound; on a busy CPU torch's thread pool spends far more time
    waiting at its barriers than computing (measured here: 75 ms vs 0.4 ms for one reduction over a
    640x272 RGB frame when the two cores are shared).
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
