"""Tiny random inpaint models built from config, saved with `save_pretrained` (the layout of a user's download).

- `folder/sd-inpaint`: `StableDiffusionInpaintPipeline` with the tiny SD UNet of `tiny_diffusion` at 9 input
  channels (noise latents, mask, masked image latents) and the tiny SD folder's VAE, text encoder, tokenizer,
  scheduler;
- `folder/sdxl-inpaint`: `StableDiffusionXLInpaintPipeline`, the tiny SDXL folder's components with a 9-channel UNet;
- `folder/flux-fill`: `FluxFillPipeline` with a one-block FLUX transformer of 384 input channels (64 noise + 64 masked
  image + 256 mask, packed 2x2) and 64 output channels, `tiny_dit`'s text encoders and VAE.

The plain SD folder (`tiny_diffusion.shared_tiny_models(...) / "sd"`) serves as the non-inpaint model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch


def build_tiny_inpaint(folder: str | Path, sd_folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny inpaint models under `folder` (`sd_folder`: the tiny SD pipeline folder); returns `folder`."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from tiny_diffusion import _tiny_unet

    folder = Path(folder)
    torch.manual_seed(seed)
    plain = StableDiffusionPipeline.from_pretrained(str(sd_folder), safety_checker=None)
    StableDiffusionInpaintPipeline(
        vae=plain.vae, text_encoder=plain.text_encoder, tokenizer=plain.tokenizer, unet=_tiny_unet(in_channels=9),
        scheduler=plain.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(str(folder / "sd-inpaint"))  # fmt: skip
    _save_tiny_sdxl_inpaint(folder / "sdxl-inpaint", Path(sd_folder).parent / "sdxl")
    _save_tiny_flux_fill(folder / "flux-fill")
    return folder


def _save_tiny_sdxl_inpaint(folder: Path, sdxl_folder: Path) -> None:
    """The tiny SDXL pipeline's components with its UNet's config at 9 input channels."""
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    plain = StableDiffusionXLPipeline.from_pretrained(str(sdxl_folder))
    unet = UNet2DConditionModel.from_config({**plain.unet.config, "in_channels": 9})
    StableDiffusionXLInpaintPipeline(
        vae=plain.vae, text_encoder=plain.text_encoder, text_encoder_2=plain.text_encoder_2, tokenizer=plain.tokenizer,
        tokenizer_2=plain.tokenizer_2, unet=unet, scheduler=plain.scheduler,
    ).save_pretrained(str(folder))  # fmt: skip


def _save_tiny_flux_fill(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from tiny_dit import FLUX_TRANSFORMER, _sharpen_attention, tiny_clip_text, tiny_dit_vae, tiny_t5

    transformer = FluxTransformer2DModel(**{**FLUX_TRANSFORMER, "in_channels": 384, "out_channels": 64})
    _sharpen_attention(transformer)
    with tempfile.TemporaryDirectory() as scratch:
        clip, clip_tokenizer = tiny_clip_text(Path(scratch) / "clip")
        t5, t5_tokenizer = tiny_t5(Path(scratch) / "t5")
    FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True
        ),
        vae=tiny_dit_vae(16), text_encoder=clip, tokenizer=clip_tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer,
        transformer=transformer,
    ).save_pretrained(str(folder))  # fmt: skip


_BUILT: dict[str, Path] = {}


def shared_tiny_inpaint(factory: object) -> Path:
    """`build_tiny_inpaint` once per test process (beside `tiny_diffusion`'s models); returns the folder holding
    sd, sd-inpaint and flux-fill."""
    if "inpaint" not in _BUILT:
        import tiny_diffusion
        from tiny_diffusion import build_tiny_models

        built = tiny_diffusion._BUILT  # shared with tiny_diffusion's `tiny` fixture: one build per process
        if "models" not in built:
            built["models"] = build_tiny_models(factory.mktemp("tiny-diffusion"))  # type: ignore[attr-defined]
        _BUILT["inpaint"] = build_tiny_inpaint(built["models"], built["models"] / "sd")
    return _BUILT["inpaint"]
