"""Control maps for ControlNet, computed per frame or read from a precomputed control video.

Every map function takes and returns float (B, 3, H, W) tensors in [0, 1] on the frames' device:

- `canny`: OpenCV Canny edges (white on black), what the canny ControlNets were trained on;
- `softedge`: smoothed Sobel gradient magnitude, normalised per frame; a model-free stand-in for the
  HED/PiDiNet maps the softedge ControlNets were trained on (close in look, not identical);
- `tile`: the frame itself (the tile ControlNet re-details a picture it is given);
- `depth`: a transformers depth-estimation model (DPT, Depth Anything, ...) given by folder or cached hub
  id, near = bright, normalised per frame;
- `pose`: OpenPose-style body maps from a transformers ViTPose model (`pose.py`; one person, the whole
  frame as its box);
- a path to a video: its frames, in step with the input (precomputed pose, depth, lineart, ...).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from v2v.errors import UsageError
from v2v.frames import images_to_tensor

CONTROLS = ("canny", "softedge", "tile", "depth", "pose")


def canny(images: torch.Tensor, low: int = 100, high: int = 200) -> torch.Tensor:
    """Canny edges of (B, 3, H, W) float [0, 1] frames -> (B, 3, H, W) float in {0, 1}."""
    import cv2

    pixels = images.detach().float().clamp(0, 1).mul(255).round().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    edges = [cv2.Canny(cv2.cvtColor(np.ascontiguousarray(p), cv2.COLOR_RGB2GRAY), low, high) for p in pixels]
    maps = torch.from_numpy(np.stack(edges)).to(images.device, images.dtype).div_(255.0)
    return maps[:, None].expand(-1, 3, -1, -1).contiguous()


def softedge(images: torch.Tensor, blur: float = 1.5) -> torch.Tensor:
    """Soft edges: Sobel magnitude of the blurred luma, scaled so each frame's maximum is 1."""
    luma = (images.float() * torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)).sum(1, True)
    radius = max(1, round(blur * 3))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * blur**2))
    kernel = kernel / kernel.sum()
    luma = F.pad(luma, (radius,) * 4, mode="replicate")
    luma = F.conv2d(F.conv2d(luma, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, sobel.view(1, 1, 3, 3)), F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))
    magnitude = torch.sqrt(gx**2 + gy**2)
    magnitude = magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return magnitude.expand(-1, 3, -1, -1).to(images.dtype).contiguous()


def tile(images: torch.Tensor) -> torch.Tensor:
    """The tile ControlNet's condition is the frame itself."""
    return images


class DepthMaps:
    """Depth maps from a transformers depth-estimation model, loaded from a folder or cached hub id."""

    def __init__(self, model: str, device: str | torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        from v2v.diffusion.models import resolve_path
        from v2v.errors import ModelError

        path = resolve_path(model, "depth model")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForDepthEstimation.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load depth model {model!r}: "
                             f"{(str(exc) or type(exc).__name__).splitlines()[0]}") from exc
        self.model.to(device).eval()
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float [0, 1] -> (B, 3, H, W) relative depth in [0, 1], near = bright."""
        inputs = self.processor(images=images.float().cpu(), return_tensors="pt", do_rescale=False)
        depth = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype)).predicted_depth
        depth = F.interpolate(depth[:, None].float(), size=images.shape[-2:], mode="bicubic", align_corners=False)
        low = depth.amin(dim=(2, 3), keepdim=True)
        high = depth.amax(dim=(2, 3), keepdim=True)
        depth = (depth - low) / (high - low).clamp_min(1e-6)
        return depth.expand(-1, 3, -1, -1).to(images.dtype).contiguous()


class ControlVideo:
    """Precomputed control maps from a video: its frame i conditions input frame i (of the processed range).

    A `SideInput` aligned by frame number: read forward in its own thread, reopened only when asked for an
    earlier frame, so memory is flat and keyframe mode or segmented runs, which ask out of step, get the right maps.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from v2v.io.side_input import SideInput

        self.path = os.fspath(path)
        self.side = SideInput(self.path, what="control video", align="index")  # fails now if unreadable

    def maps(self, indices: list[int], like: torch.Tensor) -> torch.Tensor:
        """Frames `indices` of the control video, resized to `like` (B, 3, H, W); float [0, 1] like `like`."""
        picked = [self.side.at_index(index) for index in indices]
        maps = images_to_tensor(picked, like.device, like.dtype)
        if maps.shape[-2:] != like.shape[-2:]:
            maps = F.interpolate(maps, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return maps

    def close(self) -> None:
        self.side.close()


def make_control(
    kind: str, *, device: str | torch.device, dtype: torch.dtype, depth_model: str | None, pose_model: str | None
) -> Any:
    """A function (B, 3, H, W) -> (B, 3, H, W) for a control name of CONTROLS, or a `ControlVideo` for a path."""
    if kind == "canny":
        return canny
    if kind == "softedge":
        return softedge
    if kind == "tile":
        return tile
    if kind == "depth":
        if not depth_model:
            raise UsageError(
                "--control depth needs --depth-model FOLDER_OR_ID (a transformers depth model such as "
                "depth-anything/Depth-Anything-V2-Small-hf)"
            )
        return DepthMaps(depth_model, device, dtype)
    if kind == "pose":
        if not pose_model:
            raise UsageError(
                "--control pose needs --pose-model FOLDER_OR_ID (a transformers ViTPose model such as "
                "usyd-community/vitpose-base-simple), or pass precomputed pose maps as --control POSE_VIDEO"
            )
        from v2v.diffusion.pose import PoseMaps

        return PoseMaps(pose_model, device, dtype)
    if os.path.exists(kind):
        return ControlVideo(kind)
    raise UsageError(f"unknown control {kind!r}: choose one of {', '.join(CONTROLS)} or give a control video path")
