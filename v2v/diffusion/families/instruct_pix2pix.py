"""InstructPix2Pix: instruction editing ("make it winter") with a UNet that reads the source image's latents
beside the noise (8 input channels). The source frame is the image the editor sees; `image_guidance` says how
closely the result holds to it."""

from __future__ import annotations

from typing import Any

from v2v.diffusion.families.sd import LDM_INPUT_CONV, SDXL_SECOND_TEXT_ENCODER, StableDiffusion
from v2v.diffusion.registry import Batch, Defaults, ModelInfo, register


class InstructPix2Pix(StableDiffusion):
    name = "instruct-pix2pix"
    title = "InstructPix2Pix"
    pipelines = {"edit": "StableDiffusionInstructPix2PixPipeline"}
    controlnet_classes = ()
    ip_adapter = None
    defaults = Defaults(steps=20, guidance=7.5, image_guidance=1.5)
    checkpoint_configs = "timbrooks/instruct-pix2pix"
    in_channels = 8  # noise latents + the source image's latents

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:
            return info.has(LDM_INPUT_CONV) and not info.has(SDXL_SECOND_TEXT_ENCODER) and self._fits_channels(info)
        if info.class_name == "StableDiffusionInstructPix2PixPipeline":
            return True
        return (
            info.class_name.startswith("StableDiffusion")
            and "text_encoder_2" not in info.index
            and (self._fits_channels(info))
        )

    def guided(self, pipe: Any, guidance: float, image_guidance: float | None) -> bool:
        return guidance > 1.0 and (image_guidance or 0.0) >= 1.0  # as the pipeline decides it

    def guidance_groups(self, guided: bool) -> int:
        return 3 if guided else 1  # text and image, image only, neither

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        return {**self.text_image_arguments(pipe, batch), "image_guidance_scale": batch.image_guidance}

    def encode_text(self, pipe: Any, prompt: str, negative: str | None, **options: Any) -> dict[str, Any]:
        encoded = pipe._encode_prompt(prompt, pipe._execution_device, 1, negative is not None, negative)
        if negative is None:
            return {"prompt_embeds": encoded}
        embeds, negative_embeds, _ = encoded.chunk(3)  # the pipeline orders them prompt, negative, negative
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}


register(InstructPix2Pix())
