"""FLUX.1 Kontext: instruction editing ("make it sunset") with `FluxKontextPipeline`. The source frame is the image
the editor sees: its latents follow the noise in the transformer's sequence (rotary ids offset by 1 in their first
axis), and the result is denoised from noise, so there is no strength.

Cross-frame attention is FLUX's (`v2v.diffusion.dit_attention.FluxCrossFrameProcessor`); a frame's image tokens are
those of the result and of its source, so both are banked. The frame keeps its size: Kontext's own resizing, to
its preferred resolutions (`_auto_resize`) and to a megapixel (`max_area`), is turned off, and sides are padded to a
multiple of 16 as for FLUX.1. `--true-cfg` with a negative prompt is FLUX.1's too.
"""

from __future__ import annotations

from typing import Any

from v2v.diffusion.families.flux import Flux
from v2v.diffusion.registry import Batch, Defaults, ModelInfo, register

KONTEXT_PIPELINES = ("FluxKontextPipeline", "FluxKontextInpaintPipeline")


class FluxKontext(Flux):
    name = "flux-kontext"
    title = "FLUX.1 Kontext"
    pipelines = {"edit": "FluxKontextPipeline"}
    controlnet_classes = ()
    ip_adapter = None
    # diffusers' Kontext settings
    defaults = Defaults(steps=28, guidance=2.5, half=False, multiple=16, tile=1024, tile_overlap=256)
    tileable = False  # the source image's tokens share the sequence: not cut into tiles
    checkpoint_configs = "black-forest-labs/FLUX.1-Kontext-dev"
    true_cfg_kinds = ("edit",)  # FluxKontextPipeline takes negative_prompt and true_cfg_scale

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:  # laid out as FLUX.1's: `detect` gives it to `edit`, FLUX.1 to `restyle`
            return Flux.recognise(self, info)
        return info.class_name in KONTEXT_PIPELINES

    def image_tokens(self, pipe: Any, height: int, width: int) -> int:
        return 2 * super().image_tokens(pipe, height, width)  # the result's tokens, then the source's

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        height, width = batch.images.shape[-2:]
        arguments = super().call_arguments(pipe, batch)
        arguments.update(max_area=int(height * width), _auto_resize=False)  # else Kontext scales to a megapixel
        return arguments


register(FluxKontext())
