"""Stable Diffusion 1.x/2.x: UNet img2img (with ControlNets), the base of the other UNet families.

`StableDiffusion` holds what every UNet family shares (cross-frame attention on the UNet's self-attention
layers `attn1`, the bank's shapes, the img2img call); `sdxl.py` and `instruct_pix2pix.py` subclass it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from v2v.diffusion.registry import Batch, Defaults, Family, IPAdapterDefaults, ModelInfo, register

if TYPE_CHECKING:
    from v2v.diffusion.attention import FrameBank

log = logging.getLogger(__name__)

LDM_INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"  # single files in the original (LDM) layout
SD2_TEXT_ENCODER = "cond_stage_model.model."  # OpenCLIP ViT-H: SD 2.x
SDXL_SECOND_TEXT_ENCODER = "conditioner.embedders.1."
SD2_V = "stabilityai/stable-diffusion-2-1"  # 768-v: v-prediction
SD2_BASE = "stabilityai/stable-diffusion-2-1-base"  # 512 base: epsilon prediction
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionControlNetPipeline",
                "StableDiffusionControlNetImg2ImgPipeline", "LatentConsistencyModelPipeline",
                "LatentConsistencyModelImg2ImgPipeline")  # fmt: skip


def unet_in_channels(info: ModelInfo) -> int | None:
    """The UNet's input channels: 4 for text-to-image models, 8 for InstructPix2Pix, 9 for inpainting."""
    if info.is_file:
        shape = info.shape(LDM_INPUT_CONV)
        return shape[1] if shape is not None and len(shape) == 4 else None
    return info.config("unet").get("in_channels")


def is_sd2_file(info: ModelInfo) -> bool:
    return info.has(SD2_TEXT_ENCODER)


def sd2_prediction(info: ModelInfo) -> str:
    """SD 2.x single files do not say whether they predict epsilon (512 base) or v (768-v); their names
    usually do ("512-base-ema", "v2-1_512-ema-pruned" vs "768-v-ema", "v2-1_768-ema-pruned")."""
    name = info.path.name.lower()
    return "epsilon" if "base" in name or "512" in name else "v_prediction"


class StableDiffusion(Family):
    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    pipelines = {
        "restyle": "StableDiffusionImg2ImgPipeline",
        "restyle+controlnet": "StableDiffusionControlNetImg2ImgPipeline",
    }
    controlnet_classes = ("ControlNetModel",)
    ip_adapter = IPAdapterDefaults(
        "h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
        "models/ip-adapter_sd15.safetensors 'models/image_encoder/*'",
    )
    defaults = Defaults(steps=20, guidance=7.5, strength=0.5)
    checkpoint_configs = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    in_channels = 4  # what the UNet takes: latents only
    controlnet_keys = ("cross_attention_dim", "in_channels", "block_out_channels", "addition_embed_type")
    lora_text_widths: tuple[int, ...] = (768, 1024)  # the text width its LoRAs' cross-attention keys read

    def claims_lora(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """A UNet LoRA whose cross-attention key projections read this family's text width (diffusers' layout
        `unet.….attn2.to_k.lora_A.weight` or kohya's `lora_unet_…_attn2_to_k.lora_down.weight`)."""
        return any(("attn2.to_k" in key or "attn2_to_k" in key) and "unet" in key and shape[-1] in self.lora_text_widths
                   and key.endswith(("lora_A.weight", "lora.down.weight", "lora_down.weight"))
                   for key, shape in shapes.items() if len(shape) == 2)  # fmt: skip

    # --- recognition

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:
            return info.has(LDM_INPUT_CONV) and not info.has(SDXL_SECOND_TEXT_ENCODER) and self._fits_channels(info)
        return info.class_name in SD_PIPELINES and "text_encoder_2" not in info.index and self._fits_channels(info)

    def _fits_channels(self, info: ModelInfo) -> bool:
        channels = unet_in_channels(info)
        return channels == self.in_channels or (channels is None and self.in_channels == 4)

    def single_file_configs(self, info: ModelInfo) -> str:
        if is_sd2_file(info):
            return SD2_BASE if sd2_prediction(info) == "epsilon" else SD2_V
        return str(self.checkpoint_configs)

    def adjust_single_file(self, pipe: Any, info: ModelInfo, model_config: str | None) -> None:
        """SD 2.x: the prediction type from the file's name, whatever the configs' scheduler says (unless the
        user gave the configs, which then decide)."""
        if not is_sd2_file(info) or model_config:
            return
        prediction = sd2_prediction(info)
        log.info(
            "%s: SD 2.x single file taken as %s (prediction_type %s, from its name); pass --model-config with the "
            "other's diffusers folder if that is wrong",
            info.path.name,
            "512 base" if prediction == "epsilon" else "768-v",
            prediction,
        )
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction)

    # --- controls

    def check_controlnet(self, controlnet: Any, pipe: Any, name: str, model: str) -> None:
        from v2v.diffusion.models import check_controlnet_fits

        check_controlnet_fits(controlnet, pipe.unet, name, model, self.controlnet_keys)

    # --- temporal

    def cross_frame_attention(self, pipe: Any, bank: FrameBank) -> AbstractContextManager[None]:
        from v2v.diffusion import attention

        return attention.cross_frame_attention(pipe.unet, bank)

    def bank_shapes(self, pipe: Any, height: int, width: int) -> list[tuple[int, int]]:
        """Each `attn1` layer's tokens at its UNet level: the latent (height, width / the VAE factor) halved
        once per down block above it (ceil, as the stride-2 convolutions round)."""
        unet = pipe.unet
        factor = int(getattr(pipe, "vae_scale_factor", 8))
        rows, columns = -(-height // factor), -(-width // factor)
        levels = len(unet.down_blocks)
        shapes = []
        for name, module in unet.named_modules():
            if not name.endswith("attn1"):
                continue
            parts = name.split(".")
            if parts[0] == "down_blocks":
                level = int(parts[1])
            elif parts[0] == "up_blocks":
                level = levels - 1 - int(parts[1])
            else:  # mid_block
                level = levels - 1
            tokens = _halved(rows, level) * _halved(columns, level)
            shapes.append((tokens, int(module.to_k.out_features)))
        return shapes

    # --- per batch

    def guided(self, pipe: Any, guidance: float, image_guidance: float | None) -> bool:
        # LCM-distilled UNets take the guidance as an input instead (as diffusers decides it)
        return guidance > 1.0 and pipe.unet.config.get("time_cond_proj_dim") is None

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        arguments = self.text_image_arguments(pipe, batch)
        arguments["strength"] = batch.strength
        if batch.control_images:
            single = len(batch.control_images) == 1
            arguments["control_image"] = batch.control_images[0] if single else batch.control_images
            arguments["controlnet_conditioning_scale"] = batch.control_scales[0] if single else batch.control_scales
        if batch.ip_adapter_embeds is not None:
            arguments["ip_adapter_image_embeds"] = batch.ip_adapter_embeds
        return arguments

    def text_image_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        """What every SD-style pipeline takes: prompts per frame, the frames, steps, guidance, generators."""
        guided = self.guided(pipe, batch.guidance, batch.image_guidance)
        return dict(
            **self.text_arguments(pipe, batch, batch.negative_prompt if guided else None),
            image=batch.images,
            num_inference_steps=batch.steps,
            guidance_scale=batch.guidance,
            generator=batch.generators,
            output_type="pt",
        )

    def encode_text(self, pipe: Any, prompt: str, negative: str | None, **options: Any) -> dict[str, Any]:
        embeds, negative_embeds = pipe.encode_prompt(prompt, pipe._execution_device, 1, negative is not None, negative)
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}


def _halved(size: int, times: int) -> int:
    for _ in range(times):
        size = -(-size // 2)
    return size


register(StableDiffusion())
