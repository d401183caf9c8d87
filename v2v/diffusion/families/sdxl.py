"""Stable Diffusion XL: two text encoders and size/crop conditions, otherwise the UNet family of `sd.py`."""

from __future__ import annotations

from typing import Any

from v2v.diffusion.families.sd import LDM_INPUT_CONV, SDXL_SECOND_TEXT_ENCODER, StableDiffusion
from v2v.diffusion.registry import Defaults, IPAdapterDefaults, ModelInfo, register

SDXL_PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                  "StableDiffusionXLControlNetPipeline", "StableDiffusionXLControlNetImg2ImgPipeline")  # fmt: skip


class StableDiffusionXL(StableDiffusion):
    name = "sdxl"
    title = "Stable Diffusion XL"
    pipelines = {
        "restyle": "StableDiffusionXLImg2ImgPipeline",
        "restyle+controlnet": "StableDiffusionXLControlNetImg2ImgPipeline",
    }
    ip_adapter = IPAdapterDefaults(
        "h94/IP-Adapter/sdxl_models/ip-adapter_sdxl.safetensors",
        "sdxl_models/ip-adapter_sdxl.safetensors 'sdxl_models/image_encoder/*'",
    )
    # diffusers' SDXL img2img guidance
    defaults = Defaults(steps=20, guidance=5.0, strength=0.5, tile=1024, tile_overlap=256)
    checkpoint_configs = "stabilityai/stable-diffusion-xl-base-1.0"
    lora_text_widths = (2048,)  # both text encoders' states, side by side

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:
            return info.has(LDM_INPUT_CONV) and info.has(SDXL_SECOND_TEXT_ENCODER) and self._fits_channels(info)
        return info.class_name in SDXL_PIPELINES and self._fits_channels(info)

    def encode_text(self, pipe: Any, prompt: str, negative: str | None, **options: Any) -> dict[str, Any]:
        encoded = pipe.encode_prompt(prompt, None, pipe._execution_device, 1, negative is not None, negative)
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        return dict(zip(names, encoded, strict=True))


register(StableDiffusionXL())
