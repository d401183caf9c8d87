"""`RestyleStage`: Stable Diffusion img2img over a stream of frames, held by ControlNet, styled by a prompt
and/or an IP-Adapter reference, and kept steady in time.

With `temporal` on, three things tie the frames together:

1. every frame starts from the same initial noise (the same seed for each frame);
2. cross-frame attention (`attention.py`): self-attention also reads the anchor and previous frame;
3. flow fusion (`v2v.consistency.TemporalFuser`): the previous output, warped by the source's flow, is
   blended in where it is visible.

With `keyframe_every` K > 1 only every K-th frame is diffused; the frames between get the look of the
keyframes on both sides by flow (`keyframes.py`), then the same fusion.

With `temporal` off each frame is plain img2img with its own seed (`seed + frame.index`), the baseline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from v2v.diffusion.config import RestyleConfig
from v2v.errors import ModelError, require
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.pipeline import batched
from v2v.scenes import is_cut

log = logging.getLogger(__name__)


class RestyleStage:
    """A pipeline stage (see `v2v.pipeline.Stage`) that restyles frames as `config` says.

    Models load when the stage is made, so a missing model fails before any frame is decoded. Frames may
    have any size: they are padded (edge pixels repeated) to a multiple of the VAE's factor, and cut back after.
    """

    def __init__(self, config: RestyleConfig) -> None:
        require("diffusers", "diffusion")
        import torch

        from v2v.diffusion import control, models
        from v2v.diffusion.attention import FrameBank

        self.config = config.check()
        self.device = config.device or models.default_device()
        self.dtype = getattr(torch, config.dtype) if config.dtype else models.default_dtype(self.device)
        # 1. ControlNets first: the cheaper error (a missing ControlNet) comes before the big load.
        controlnets = [models.load_controlnet(name, self.dtype) for name in config.controlnets]
        # 2. The base pipeline, then what modifies it.
        self.pipe = models.load_pipeline(
            config.model, controlnets, device=self.device, dtype=self.dtype, model_config=config.model_config
        )
        for net, name in zip(controlnets, config.controlnets, strict=True):
            models.check_controlnet_fits(net, self.pipe.unet, name, config.model)
        if config.scheduler:
            models.set_scheduler(self.pipe, config.scheduler)
        if config.lora:
            models.load_lora(self.pipe, config.lora, config.lora_scale)
        # classifier-free guidance as the pipeline decides it (LCM-distilled UNets take guidance as an input)
        self.guided = config.guidance > 1.0 and self.pipe.unet.config.get("time_cond_proj_dim") is None
        self.ip_embeds: list[torch.Tensor] | None = None
        if config.ip_adapter:
            reference = _read_reference(config.ip_adapter)
            models.load_ip_adapter(self.pipe, config.ip_adapter_model, config.image_encoder, config.ip_adapter_scale)
            self.ip_embeds = self.pipe.prepare_ip_adapter_image_embeds(reference, None, self.device, 1, self.guided)
        if config.attention_slicing:
            if config.ip_adapter:  # slicing would replace the IP-Adapter's attention processors
                log.warning("attention slicing is not combined with an IP-Adapter; running without it")
            else:
                self.pipe.enable_attention_slicing()
        if config.vae_tiling:
            self.pipe.vae.enable_tiling()
        # 3. Control maps, prompt checks, and the cross-frame attention bank.
        self.controls = [
            control.make_control(
                kind, device=self.device, dtype=self.dtype, depth_model=config.depth_model, pose_model=config.pose_model
            )
            for kind in config.control_kinds
        ]
        self._warn_long_prompt(config.prompt, "prompt")
        self._warn_long_prompt(config.negative_prompt, "negative prompt")
        self.bank = FrameBank(config.bank_tokens)
        self.multiple = int(getattr(self.pipe, "vae_scale_factor", 8))

    def _warn_long_prompt(self, prompt: str, what: str) -> None:
        tokenizer = self.pipe.tokenizer
        count = len(tokenizer(prompt).input_ids)
        if count > tokenizer.model_max_length:
            kept = tokenizer.batch_decode([tokenizer(prompt).input_ids[1 : tokenizer.model_max_length - 1]])[0]
            log.warning(
                "the %s is %d tokens; the text encoder reads %d, so it is cut after: %r",
                what,
                count,
                tokenizer.model_max_length,
                kept[-40:],
            )

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        self.bank.reset()
        fuser = self._fuser()
        try:
            for frame, image in self._restyled(frames):
                yield frame.with_image(self._fuse(fuser, image, frame.image))
        finally:
            for made in self.controls:
                if hasattr(made, "close"):
                    made.close()

    def _restyled(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, np.ndarray]]:
        """(source frame, restyled image) in order: batches of diffused frames, or keyframes and the look
        carried between them by flow."""
        if self.config.keyframe_every > 1:
            from v2v.diffusion.keyframes import KeyframeWindow
            from v2v.flow import make_flow_estimator

            window = KeyframeWindow(
                self.config.keyframe_every,
                lambda frame: self.restyle([frame.image], [frame.index])[0],
                make_flow_estimator("dis"),
                on_cut=self.bank.reset,  # a new scene gets its own anchor frame
            )
            yield from window.process(frames)
            return
        previous: np.ndarray | None = None
        for batch in batched(frames, self.config.batch_size):
            # the first frame of a new shot becomes the anchor of cross-frame attention
            cuts = []
            for frame in batch:
                cuts.append(previous is not None and is_cut(previous, frame.image))
                previous = frame.image
            images = self.restyle([frame.image for frame in batch], [frame.index for frame in batch], cuts)
            yield from zip(batch, images, strict=True)

    def _fuser(self) -> Any:
        """The flow fuser of `v2v.consistency` when temporal is on with fusion, else None."""
        if not self.config.temporal or self.config.fusion <= 0:
            return None
        from v2v.consistency import FusionConfig, TemporalFuser

        return TemporalFuser(FusionConfig(strength=self.config.fusion), device=self.device)

    def _fuse(self, fuser: Any, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Blend in the previous output, warped by the source's flow, where it is visible (the fuser
        restarts by itself at scene cuts)."""
        return edited if fuser is None else fuser.fuse(edited, source)

    @staticmethod
    def _control_map(make: Any, frames: Any, indices: list[int], pad_h: int, pad_w: int) -> Any:
        """A control map for (B, 3, H, W) frames (before padding), padded like them."""
        from v2v.diffusion.control import ControlVideo

        maps = make.maps(indices, frames) if isinstance(make, ControlVideo) else make(frames)
        return _pad(maps, pad_h, pad_w)

    def restyle(
        self, images: Sequence[np.ndarray], indices: Sequence[int], cuts: Sequence[bool] | None = None
    ) -> list[np.ndarray]:
        """Restyle consecutive frames (RGB uint8 (H, W, 3), all one size) in one pipeline call.

        `indices` are the frames' positions in the clip (they seed the noise when temporal is off). With
        temporal on the frames must come in clip order across calls: the attention bank carries over, and
        a frame flagged in `cuts` (the first of a new shot) starts afresh as the anchor.
        """
        import torch
        import torch.nn.functional as F

        from v2v.diffusion.attention import cross_frame_attention

        config = self.config
        # 1. Frames to a tensor whose sides the VAE and UNet accept.
        frames = images_to_tensor(images, self.device, self.dtype)
        height, width = frames.shape[-2:]
        scaled = _fit(frames, config.max_side)
        pad_h, pad_w = -scaled.shape[-2] % self.multiple, -scaled.shape[-1] % self.multiple
        padded = _pad(scaled, pad_h, pad_w)
        count = padded.shape[0]
        # 2. Control maps and the noise seeds.
        arguments: dict[str, Any] = {}
        if self.controls:
            maps = [self._control_map(make, scaled, list(indices), pad_h, pad_w) for make in self.controls]
            scales = config.control_scales * (len(maps) if len(config.control_scales) == 1 else 1)
            arguments["control_image"] = maps[0] if len(maps) == 1 else maps
            arguments["controlnet_conditioning_scale"] = scales[0] if len(maps) == 1 else scales
        if self.ip_embeds is not None:
            arguments["ip_adapter_image_embeds"] = [_repeat_embeds(e, count, self.guided) for e in self.ip_embeds]
        seeds = [config.seed] * count if config.temporal else [config.seed + index for index in indices]
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        # 3. Denoise, with cross-frame attention when temporal is on.
        attention = cross_frame_attention(self.pipe.unet, self.bank) if config.temporal else contextlib.nullcontext()
        try:
            with attention, torch.inference_mode():
                self.bank.begin(list(cuts) if cuts is not None else [False] * count)
                result = self.pipe(
                    prompt=[config.prompt] * count,
                    negative_prompt=[config.negative_prompt] * count if self.guided else None,
                    image=padded,
                    strength=config.strength,
                    num_inference_steps=config.steps,
                    guidance_scale=config.guidance,
                    generator=generators,
                    output_type="pt",
                    **arguments,
                ).images
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError "... can't allocate memory"
            if not isinstance(exc, torch.cuda.OutOfMemoryError) and "allocate" not in str(exc):
                raise
            raise ModelError(
                f"out of memory restyling {count} frame(s) of {width}x{height} on {self.device}: use --batch-size 1, "
                "--max-side 768 (diffuse smaller, scale back), --vae-tiling or --attention-slicing"
            ) from exc
        # 4. Back to the frames' own size.
        result = result[..., : scaled.shape[-2], : scaled.shape[-1]]
        if result.shape[-2:] != (height, width):
            result = F.interpolate(result.float(), size=(height, width), mode="bicubic", align_corners=False)
        return tensor_to_images(result)


def _pad(images: Any, pad_h: int, pad_w: int) -> Any:
    """(B, C, H, W) grown by `pad_h` rows and `pad_w` columns of repeated edge pixels."""
    import torch.nn.functional as F

    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images


def _read_reference(path: str) -> Any:
    """The IP-Adapter's reference image as an RGB PIL image."""
    from PIL import Image

    from v2v.errors import InputError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the IP-Adapter reference image {path}: {exc}") from exc


def quiet_loading() -> None:
    """Hide diffusers'/transformers' loading progress bars (the CLI has its own)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _fit(frames: Any, max_side: int | None) -> Any:
    """Scale (B, 3, H, W) frames down (antialiased) so the longer side is at most `max_side`."""
    import torch.nn.functional as F

    height, width = frames.shape[-2:]
    if not max_side or max(height, width) <= max_side:
        return frames
    factor = max_side / max(height, width)
    size = (max(8, round(height * factor)), max(8, round(width * factor)))
    return F.interpolate(frames.float(), size=size, mode="bicubic", antialias=True).clamp(0, 1).to(frames.dtype)


def _repeat_embeds(embeds: Any, count: int, guided: bool) -> Any:
    """IP-Adapter embeds for `count` frames, in the layout the pipeline expects ([uncond..., cond...])."""
    import torch

    if guided:
        negative, positive = embeds.chunk(2)
        return torch.cat([negative] * count + [positive] * count)
    return torch.cat([embeds] * count)
