"""Stable Diffusion 1.x/2.x inpainting models: a UNet with 9 input channels (noise latents, the mask, the masked
image's latents), run by `StableDiffusionInpaintPipeline` (and `StableDiffusionControlNetInpaintPipeline` with
ControlNets). `v2v inpaint` takes them; the plain 4-channel models of `sd.py` are refused there, naming these.

`InpaintFamily` is what every inpaint family adds to its base family: the mask in the pipeline call, img2img-like
step counting (strength), and which plain family's models it stands in for (`base`, `examples`), so the refusal of
a plain model can name the inpainting models to use instead.
"""

from __future__ import annotations

from typing import Any

from v2v.diffusion.families.sd import LDM_INPUT_CONV, SDXL_SECOND_TEXT_ENCODER, StableDiffusion, is_sd2_file
from v2v.diffusion.registry import Batch, Defaults, ModelInfo, all_families, register


class InpaintFamily:
    """Mixin for inpaint families (put it first among the bases): `call_arguments` adds `mask_image`."""

    base: str = ""  # the plain family whose models these inpaint
    examples: str = ""  # inpainting models of that family, for messages

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        arguments: dict[str, Any] = super().call_arguments(pipe, batch)  # type: ignore[misc]
        arguments["mask_image"] = batch.masks
        height, width = batch.images.shape[-2:]
        arguments.update(height=int(height), width=int(width))
        return arguments


def inpaint_families_for(base: str) -> list[Any]:
    """The inpaint families that stand in for plain family `base` (e.g. "sd" -> [sd-inpaint])."""
    return [family for family in all_families() if getattr(family, "base", None) == base]


class StableDiffusionInpaint(InpaintFamily, StableDiffusion):
    name = "sd-inpaint"
    title = "Stable Diffusion 1.x/2.x inpainting"
    base = "sd"
    examples = "stable-diffusion-v1-5/stable-diffusion-inpainting or stabilityai/stable-diffusion-2-inpainting"
    pipelines = {
        "inpaint": "StableDiffusionInpaintPipeline",
        "inpaint+controlnet": "StableDiffusionControlNetInpaintPipeline",
    }
    defaults = Defaults(steps=25, guidance=7.5, strength=1.0)  # diffusers' inpaint defaults (50 steps there)
    checkpoint_configs = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    in_channels = 9  # noise latents + mask + masked image latents
    # a ControlNet reads 4 latent channels even beside a 9-channel UNet (control_v11p_sd15_inpaint): not compared
    controlnet_keys = ("cross_attention_dim", "block_out_channels", "addition_embed_type")

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:
            return info.has(LDM_INPUT_CONV) and not info.has(SDXL_SECOND_TEXT_ENCODER) and self._fits_channels(info)
        return (
            info.class_name.startswith("StableDiffusion")
            and not info.class_name.startswith("StableDiffusionXL")
            and "text_encoder_2" not in info.index
            and self._fits_channels(info)
        )

    def single_file_configs(self, info: ModelInfo) -> str:
        return "stabilityai/stable-diffusion-2-inpainting" if is_sd2_file(info) else str(self.checkpoint_configs)


register(StableDiffusionInpaint())
