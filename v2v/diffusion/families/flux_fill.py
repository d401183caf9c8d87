"""FLUX.1 Fill (black-forest-labs/FLUX.1-Fill-dev): a FLUX transformer that reads the masked image's latents and the
mask beside the noise (384 input channels: 64 noise + 64 image + 256 mask, each packed 2x2), run by
`FluxFillPipeline`. Plain FLUX models inpaint too, with `FluxInpaintPipeline` (the "inpaint" kind of `flux.py`).
"""

from __future__ import annotations

from typing import Any

from v2v.diffusion.families.flux import FLUX_PIPELINES, Flux, is_flux_file, transformer_in_channels
from v2v.diffusion.families.sd_inpaint import InpaintFamily
from v2v.diffusion.registry import Batch, Defaults, ModelInfo, register

FILL_CHANNELS = 384


class FluxFill(InpaintFamily, Flux):
    name = "flux-fill"
    title = "FLUX.1 Fill"
    base = ""  # plain FLUX models inpaint themselves (FluxInpaintPipeline)
    examples = "black-forest-labs/FLUX.1-Fill-dev"
    pipelines = {"inpaint": "FluxFillPipeline"}
    controlnet_classes = ()
    ip_adapter = None
    # FLUX.1-Fill-dev's card
    defaults = Defaults(steps=28, guidance=30.0, strength=1.0, half=False, multiple=16, tile=1024, tile_overlap=256)
    checkpoint_configs = "black-forest-labs/FLUX.1-Fill-dev"
    true_cfg_kinds = ()  # FluxFillPipeline takes no negative prompt

    def recognise(self, info: ModelInfo) -> bool:
        channels = transformer_in_channels(info)
        if info.is_file:
            return is_flux_file(info) and channels == FILL_CHANNELS
        return (info.class_name in FLUX_PIPELINES or info.class_name == "FluxFillPipeline") and (
            channels == FILL_CHANNELS
        )

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        arguments = super().call_arguments(pipe, batch)
        for unused in ("control_image", "controlnet_conditioning_scale", "control_mode", "ip_adapter_image_embeds"):
            arguments.pop(unused, None)
        return arguments


register(FluxFill())
