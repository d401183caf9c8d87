"""Backward warping by optical flow (a function and its module twin, kornia style).

Flow convention, one for all of v2v: a flow field from image A to image B says, for every pixel x of A,
where it went in B: x + flow(x). Tensors are float (B, 2, H, W) in pixels, channel 0 = dx, channel 1 = dy;
numpy arrays are float32 (H, W, 2) in the same order (what OpenCV returns).

Backward warping pulls B into A's frame: `warp_by_flow(B, flow_A_to_B)(x) = B(x + flow(x))`.

`warp_by_flow` takes torch tensors (grid_sample, on their device) or numpy float32 arrays in the same
(B, C, H, W) layout (cv2.remap, for per-frame work on the CPU: torch splits every full-frame operation over
its thread pool, and on a busy CPU the threads' barriers cost far more than the arithmetic; numpy runs each
operation on the calling thread and OpenCV's remap is one call per image). The coordinate grid is float32
whatever the flow's precision (a half-precision grid would be off by up to a pixel at 2048 pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

_GRIDS: dict[tuple[int, int, str], torch.Tensor] = {}
_NUMPY_GRIDS: dict[tuple[int, int], np.ndarray] = {}
Array = TypeVar("Array", torch.Tensor, np.ndarray)


def flow_to_tensor(flow: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A numpy (H, W, 2) or (B, H, W, 2) flow, or a tensor already (B, 2, H, W), as float (B, 2, H, W)."""
    if isinstance(flow, torch.Tensor):
        return flow.to(device=device, dtype=dtype)
    return torch.from_numpy(flow_to_planes(flow)).to(device=device, dtype=dtype)


def flow_to_planes(flow: np.ndarray) -> np.ndarray:
    """A numpy (H, W, 2) or (B, H, W, 2) flow as a contiguous float32 numpy (B, 2, H, W) array."""
    array = np.asarray(flow, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def images_to_planes(images: list[np.ndarray]) -> np.ndarray:
    """RGB uint8 (H, W, 3) images as one float32 numpy (B, 3, H, W) array in [0, 1] (the numpy twin of
    `v2v.frames.images_to_tensor`)."""
    planes = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)
    planes *= np.float32(1 / 255)
    return planes


def planes_to_images(planes: np.ndarray) -> list[np.ndarray]:
    """float (B, 3, H, W) numpy in [0, 1] -> RGB uint8 (H, W, 3) images (rounded, clipped)."""
    pixels = np.clip(planes * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(image.transpose(1, 2, 0)) for image in pixels]


def per_plane(values: np.ndarray, operation: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """An OpenCV operation on every (H, W) plane of a numpy (B, C, H, W) array (contiguous planes: no copies)."""
    out = [[operation(np.ascontiguousarray(plane, dtype=np.float32)) for plane in planes] for planes in values]
    return np.stack([np.stack(planes) for planes in out])


def resize_planes(values: Array, size: tuple[int, int], mode: str) -> Array:
    """Area-average ("area") or bilinear ("bilinear", half-pixel centres) resize of (B, C, H, W) to (h, w),
    numpy (OpenCV) or tensors (on their device)."""
    if isinstance(values, torch.Tensor):
        if mode == "area":
            return F.interpolate(values, size=size, mode="area")
        return F.interpolate(values, size=size, mode="bilinear", align_corners=False)
    import cv2

    interpolation = cv2.INTER_AREA if mode == "area" else cv2.INTER_LINEAR
    return per_plane(values, lambda plane: cv2.resize(plane, (size[1], size[0]), interpolation=interpolation))


def resize_flow(flow: Array, size: tuple[int, int], mode: str = "bilinear") -> Array:
    """A (B, 2, H, W) flow resized to (h, w) as `resize_planes` does, its vectors scaled with the grid."""
    height, width = flow.shape[-2:]
    if (height, width) == tuple(size):
        return flow
    resized = resize_planes(flow, tuple(size), mode)
    resized[:, 0] *= size[1] / width
    resized[:, 1] *= size[0] / height
    return resized


def is_uniform_scale(size: tuple[int, int], other: tuple[int, int]) -> bool:
    """Whether (h, w) `size` is `other` scaled by one factor both ways, to the pixel (an upscale of it, or
    a downscale): the only case where a flow or mask of one size means something at the other."""
    (height, width), (other_height, other_width) = size, other
    return round(other_width * height / other_height) == width or round(other_height * width / other_width) == height


def _base_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Pixel coordinates (1, 2, H, W) float32: channel 0 = x, channel 1 = y (cached: the stage warps every
    frame)."""
    key = (height, width, str(device))
    grid = _GRIDS.get(key)
    if grid is None:
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=torch.float32),
            torch.arange(width, device=device, dtype=torch.float32),
            indexing="ij",
        )
        grid = torch.stack([xs, ys])[None]
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        _GRIDS[key] = grid
    return grid


def pixel_grid(like: Array) -> Array:
    """Pixel coordinates (1, 2, H, W) of `like`'s grid (channel 0 = x, 1 = y), float32, of its kind (numpy
    array or tensor on its device)."""
    height, width = like.shape[-2:]
    if isinstance(like, torch.Tensor):
        return _base_grid(height, width, like.device)
    grid = _NUMPY_GRIDS.get((height, width))
    if grid is None:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        grid = np.stack([xs, ys])[None]
        grid.flags.writeable = False
        if len(_NUMPY_GRIDS) > 8:
            _NUMPY_GRIDS.clear()
        _NUMPY_GRIDS[(height, width)] = grid
    return grid


_BORDERS = {"border": "BORDER_REPLICATE", "zeros": "BORDER_CONSTANT", "reflection": "BORDER_REFLECT_101"}


def _remap(image: np.ndarray, flow: np.ndarray, mode: str, padding_mode: str) -> np.ndarray:
    import cv2

    grid = pixel_grid(flow)[0]
    interpolation = {"nearest": cv2.INTER_NEAREST, "bicubic": cv2.INTER_CUBIC}.get(mode, cv2.INTER_LINEAR)
    border = getattr(cv2, _BORDERS[padding_mode])
    out = np.empty(image.shape, np.float32)
    for index in range(image.shape[0]):
        map_x, map_y = grid[0] + flow[index, 0], grid[1] + flow[index, 1]
        fixed = cv2.convertMaps(map_x.astype(np.float32), map_y.astype(np.float32), cv2.CV_16SC2)
        for channel in range(image.shape[1]):  # plane by plane: no interleaving copies
            plane = np.ascontiguousarray(image[index, channel], dtype=np.float32)
            cv2.remap(plane, fixed[0], fixed[1], interpolation, dst=out[index, channel], borderMode=border,
                      borderValue=0)
    return out


def warp_by_flow(image: Array, flow: Array, mode: str = "bilinear", padding_mode: str = "border") -> Array:
    """Backward-warp `image` by `flow`: out(x) = image(x + flow(x)).

    Args:
        image: float (B, C, H, W) tensor or numpy array, any range (RGB in [0, 1], flow fields, masks).
        flow: float (B, 2, H, W) in pixels (dx, dy), from the output's frame into `image`'s frame; of the
            same kind as `image`.
        mode: "bilinear", "bicubic" (sharper: for a picture sampled once, not again and again) or "nearest".
        padding_mode: what to sample outside the image ("border", "zeros", "reflection").

    Returns:
        float (B, C, H, W) of `image`'s kind (numpy: float32; tensor: `image`'s dtype). Zero flow returns
        `image` unchanged (numpy: to OpenCV's 1/32-pixel interpolation grid).
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected image (B, C, H, W) and flow (B, 2, H, W), got {tuple(image.shape)} and "
                         f"{tuple(flow.shape)}")
    if image.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"image is {tuple(image.shape[-2:])} but flow is {tuple(flow.shape[-2:])} (H, W)")
    if mode not in ("bilinear", "bicubic", "nearest") or padding_mode not in _BORDERS:
        raise ValueError(f"unknown warp mode {mode!r} / padding {padding_mode!r}")
    if isinstance(image, np.ndarray):
        return _remap(image, np.asarray(flow), mode, padding_mode)
    height, width = image.shape[-2:]
    coords = _base_grid(height, width, flow.device) + flow.float()
    # grid_sample wants (x, y) in [-1, 1] with align_corners=True mapping -1/1 to the centres of the edge pixels
    scale_x = 2.0 / max(width - 1, 1)
    scale_y = 2.0 / max(height - 1, 1)
    grid = torch.stack([coords[:, 0] * scale_x - 1.0, coords[:, 1] * scale_y - 1.0], dim=-1)
    if image.dtype in (torch.float32, torch.float64):
        return F.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)
    # half types: sample in float32 (grid_sample wants one dtype, and a half grid is off by up to a pixel)
    warped = F.grid_sample(image.float(), grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return warped.to(image.dtype)


class FlowWarp(torch.nn.Module):
    """Module twin of `warp_by_flow`: `FlowWarp()(image (B, C, H, W), flow (B, 2, H, W)) -> (B, C, H, W)`."""

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border") -> None:
        super().__init__()
        self.mode = mode
        self.padding_mode = padding_mode

    def forward(self, image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return warp_by_flow(image, flow, self.mode, self.padding_mode)
