"""Stable Diffusion XL inpainting models (e.g. diffusers/stable-diffusion-xl-1.0-inpainting-0.1): SDXL's UNet with 9
input channels, run by `StableDiffusionXLInpaintPipeline` (`StableDiffusionXLControlNetInpaintPipeline` with
ControlNets)."""

from __future__ import annotations

from v2v.diffusion.families.sd import LDM_INPUT_CONV, SDXL_SECOND_TEXT_ENCODER
from v2v.diffusion.families.sd_inpaint import InpaintFamily
from v2v.diffusion.families.sdxl import StableDiffusionXL
from v2v.diffusion.registry import Defaults, ModelInfo, register


class StableDiffusionXLInpaint(InpaintFamily, StableDiffusionXL):
    name = "sdxl-inpaint"
    title = "Stable Diffusion XL inpainting"
    base = "sdxl"
    examples = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    pipelines = {
        "inpaint": "StableDiffusionXLInpaintPipeline",
        "inpaint+controlnet": "StableDiffusionXLControlNetInpaintPipeline",
    }
    # diffusers' SDXL inpaint card: strength < 1
    defaults = Defaults(steps=25, guidance=7.5, strength=0.99, tile=1024, tile_overlap=256)
    checkpoint_configs = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    in_channels = 9

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:
            return info.has(LDM_INPUT_CONV) and info.has(SDXL_SECOND_TEXT_ENCODER) and self._fits_channels(info)
        return info.class_name.startswith("StableDiffusionXL") and self._fits_channels(info)


register(StableDiffusionXLInpaint())
