"""Relighting with IC-Light (`v2v relight`): an SD 1.5 UNet whose first convolution also reads the foreground's
latents (and, for the background-conditioned model, the background's), made from the base by IC-Light's offsets.

IC-Light's files (`iclight_sd15_fc.safetensors`, `iclight_sd15_fbc.safetensors`) hold *offsets* keyed like the SD 1.5
UNet's diffusers state dict. As IC-Light's demo does, `conv_in` is widened first (the base's weights for the 4 latent
channels, zeros for the new ones) and then every offset is added to the base's weight of the same name. The file's
`conv_in.weight` says which model it is: 8 input channels (fc: noisy latents + foreground latents) or 12 (fbc: + the
background's latents). A file whose names or shapes do not fit the base is refused in one line naming both.

Per pipeline call (`RelightStage.prepare_batch`):

- the foreground is the frame, or, with a mask, the frame where the mask is white and mid-grey (127) elsewhere, as the
  demo's matting leaves it; it and the background are encoded by the VAE (the mode of its distribution, times the
  scaling factor, pixels mapped with the demo's x / 127 - 1) and handed to the widened `conv_in`
  (`ic_light.WidenedConvIn`), which reads them beside the noisy latents at every UNet call, as the demo's
  concatenation does;
- `light` (left, right, top, bottom) becomes the initial image of img2img, the demo's gradient from 255 to 0 towards the
  dark side; `none` starts from the frame itself, so with a zero offset file the result is the base's plain img2img;
- the background (fbc) is `--background` (an image, or a video read by time through `SideInput`), else the light's
  gradient as the demo for backgrounds draws it (224 to 32).

The rest is `DiffusionStage`'s: the same noise per shot, cross-frame attention, latent and pixel flow fusion, and,
with `light_fusion` > 0, `estimate_fusion` (Light-A-Video's idea of fusing each step's relit estimate towards the
flow-warped previous one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from v2v.diffusion.config import RelightConfig
from v2v.diffusion.stage import DiffusionStage
from v2v.errors import InputError, ModelError, UsageError
from v2v.frames import Frame

if TYPE_CHECKING:
    import torch

    from v2v.inpaint.masks import MaskSource
    from v2v.io.side_input import SideInput
    from v2v.io.source_frames import SourceFrames

log = logging.getLogger(__name__)

GREY = 127  # the demo's neutral level: x / 127 - 1 maps it to 0
KEPT_PICTURES = 256  # frames whose foreground/background wait for their pipeline call (keyframe windows are shorter)


def light_image(light: str, height: int, width: int, bright: float = 1.0, dark: float = 0.0) -> np.ndarray:
    """IC-Light's light direction as an image: float32 (H, W, 3) in [0, 1] going from `bright` on the lit side to
    `dark` on the other (the demo: 255 to 0 for the initial latent, 224 to 32 for a background)."""
    if light in ("left", "right"):
        ramp = np.linspace(bright, dark, width, dtype=np.float32)
        ramp = ramp if light == "left" else ramp[::-1]
        plane = np.tile(ramp, (height, 1))
    elif light in ("top", "bottom"):
        ramp = np.linspace(bright, dark, height, dtype=np.float32)
        ramp = ramp if light == "top" else ramp[::-1]
        plane = np.tile(ramp[:, None], (1, width))
    else:
        raise ValueError(f"no light image for {light!r}")
    return np.repeat(plane[..., None], 3, axis=2)


# --- the background ------------------------------------------------------------------------------------------------


def check_background(background: str, source: str | os.PathLike[str], length: str) -> None:
    """One line (InputError) for a background that is missing, or a background video that ends before the clip under
    length policy "error"."""
    from v2v.inpaint.masks import is_image_file

    if not os.path.exists(background):
        raise InputError(f"background {background} not found")
    if is_image_file(background) or length == "hold" or not os.path.isfile(source):
        return  # an image sequence as the clip: SideInput refuses a short background when it gets there
    from v2v.io.container import frame_seconds

    theirs, ours = frame_seconds(background), frame_seconds(source)
    if not theirs or not ours:
        return
    step = (theirs[-1] - theirs[0]) / max(1, len(theirs) - 1) if len(theirs) > 1 else 0.0
    if theirs[-1] + step < ours[-1] - 1e-3:
        raise InputError.naming("background video {background} lasts {theirs:.2f} s ({count} frames) but the video "
                                "{source} lasts {ours:.2f} s; give one as long, or {background_length} hold (its last "
                                "frame is held)", background=background, theirs=theirs[-1] + step, count=len(theirs),
                                source=os.fspath(source), ours=ours[-1])


class Background:
    """The background of each frame: one image, or a video read beside the clip by time (`SideInput`), at the frame's
    size (an image is scaled to cover it and centre-cropped, as IC-Light's demo fits its inputs)."""

    def __init__(self, path: str, *, main_origin: float = 0.0, length: str = "error") -> None:
        from v2v.inpaint.masks import is_image_file

        self.path = path
        self.image: np.ndarray | None = None
        self.side: SideInput | None = None
        if is_image_file(path):
            from PIL import Image

            try:
                with Image.open(path) as image:
                    self.image = np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read background image {path}: {exc}") from None
        else:
            from v2v.io.side_input import SideInput

            self.side = SideInput(path, what="background video", main_origin=main_origin, shorter=length,
                                  size="keep")

    def for_frame(self, frame: Frame) -> np.ndarray:
        image = self.side.frame_for(frame) if self.side is not None else self.image
        assert image is not None
        return cover(image, frame.height, frame.width)

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` scaled to cover height x width and centre-cropped to it (RGB uint8)."""
    import cv2

    if image.shape[:2] == (height, width):
        return image
    scale = max(height / image.shape[0], width / image.shape[1])
    size = (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale)))
    scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


# --- the stage ------------------------------------------------------------------------------------------------------


class RelightStage(DiffusionStage):
    """A pipeline stage (see `v2v.pipeline.Stage`): relight every frame with IC-Light (see the module docstring).

    Args:
        config: the run's settings.
        mask: where each frame's foreground mask comes from (a `MaskSource`, as `MaskSpec.open()` gives it), or None:
            the whole frame is the foreground.
        background: each frame's background (fbc models), or None.
    """

    def __init__(self, config: RelightConfig, mask: MaskSource | None = None,
                 background: Background | None = None) -> None:
        from v2v.diffusion import registry

        # 1. What can be refused before the base loads: the family, the file, the background against the model.
        family, _ = registry.detect(config.check().model, config.model_config, config.kind)
        if family.name != "sd":
            raise ModelError(f"IC-Light relights with Stable Diffusion 1.5 bases; {config.model!r} is {family.title}")
        from v2v.diffusion.ic_light import merge_ic_light, read_ic_light
        from v2v.diffusion.models import resolve_path

        # a local file, or a hub path such as lllyasviel/ic-light/iclight_sd15_fc.safetensors (downloaded once)
        self.ic_light = read_ic_light(resolve_path(config.ic_light, "IC-Light file"))
        if self.ic_light.channels == 8 and config.background:
            raise UsageError.naming("{background} needs IC-Light's background model (fbc, 12 channels); {file} is "
                                    "the foreground-only fc model: drop {background} or pass the fbc file",
                                    file=config.ic_light)
        if self.ic_light.channels == 12 and not config.background and config.light == "none":
            raise UsageError.naming("IC-Light's background model (fbc) needs a background: give {background} IMAGE|"
                                    "VIDEO or a {light} direction")
        # 2. The base, then IC-Light's offsets merged into its UNet, which then reads the conditions at every call.
        super().__init__(config)
        merge_ic_light(self.pipe.unet, self.ic_light, config.model)
        self.ic_light.offsets = {}  # merged: the file's 1.7 GB need not stay in memory
        self.mask, self.background = mask, background
        self._pictures: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        self.estimate_fusion: Any = None
        if config.temporal and config.light_fusion > 0:
            from v2v.diffusion.estimate_fusion import EstimateFusion, fuses

            if not fuses(self.pipe):
                raise UsageError.naming("{light_fusion} needs an epsilon-predicting model and a scheduler with "
                                        "alphas_cumprod (DDIM, PNDM, Euler, ...); set {light_fusion} 0")
            self.estimate_fusion = EstimateFusion(self.pipe, config.light_fusion, self.device, config.batch_size)
            if self.latent_fusion is not None:  # the same pairs of frames: estimate each flow once
                self.estimate_fusion.estimator = self.latent_fusion.estimator
        log.info("IC-Light %s (%d channels) merged into %s; light %s%s", self.ic_light.variant,
                 self.ic_light.channels, config.model, config.light,
                 f", background {config.background}" if config.background else "")  # fmt: skip

    @property
    def context(self) -> Any:
        """The diffusion stage's, and a mask's with state of its own (automatic or tracked: `MaskSpec`)."""
        from v2v.pipeline import Context

        return super().context + (getattr(getattr(self, "mask", None), "context", None) or Context())

    def attach_source(self, source: SourceFrames) -> None:
        """The run's source, for a mask that numbers frames in the clip or carries a mask through it."""
        from v2v.pipeline import attach_source

        if self.mask is not None:
            attach_source([self.mask], source)

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        if self.estimate_fusion is not None:
            self.estimate_fusion.reset()
        self._pictures.clear()
        try:
            yield from super().process(self._noted(frames))
        finally:
            for source in (self.mask, self.background):
                if source is not None:
                    source.close()

    def _noted(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """The frames, each one's foreground (with a mask) and background kept for its pipeline call."""
        for frame in frames:
            foreground = None
            if self.mask is not None:
                alpha = self.mask.mask_for(frame)[..., None]
                foreground = (GREY + (frame.image.astype(np.float32) - GREY) * alpha).round().astype(np.uint8)
            background = self.background.for_frame(frame) if self.background is not None else None
            self._pictures[frame.index] = (foreground, background)
            self._pictures.pop(frame.index - KEPT_PICTURES, None)
            yield frame

    def prepare_batch(self, batch: Any, indices: list[int], fit: Any) -> None:
        """The foreground's (and background's) latents for the UNet's extra channels, and the light's initial image."""
        import torch

        pictures = [self._pictures.pop(index, (None, None)) for index in indices]
        foreground = batch.images
        if all(fg is not None for fg, _ in pictures):
            foreground = fit([fg for fg, _ in pictures])
        conditions = [foreground]
        height, width = batch.images.shape[-2:]
        if self.ic_light.channels == 12:
            if all(bg is not None for _, bg in pictures):
                conditions.append(fit([bg for _, bg in pictures]))
            else:
                image = light_image(self.config.light, height, width, bright=224 / 255, dark=32 / 255)
                conditions.append(_as_batch(image, batch.images))
        with torch.inference_mode():
            self.pipe.unet.conv_in.conditions = torch.cat([self._encode(image) for image in conditions], dim=1)
        if self.config.light != "none":
            batch.images = _as_batch(light_image(self.config.light, height, width), batch.images)

    def diffuse(self, images: Any, indices: Any, cuts: Any = None, masks: Any = None) -> list[np.ndarray]:
        if self.estimate_fusion is None:
            return super().diffuse(images, indices, cuts, masks)
        with self.estimate_fusion.hooked(images, indices, cuts, self.multiple, self.config.max_side):
            return super().diffuse(images, indices, cuts, masks)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the VAE's latents as IC-Light's demo takes them (mode x scaling factor)."""
        vae = self.pipe.vae
        pixels = (images.to(vae.dtype) * 255 / GREY - 1).clamp(-1, 1)
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor


def _as_batch(image: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A float (H, W, 3) image as a (B, 3, H, W) tensor like `like` (its batch, device and dtype)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    return tensor.to(like.device, like.dtype).expand(like.shape[0], -1, -1, -1).contiguous()
