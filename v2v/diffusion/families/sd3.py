"""Stable Diffusion 3 / 3.5 (medium, large, turbo): img2img with `StableDiffusion3Img2ImgPipeline`.

SD3 is an MMDiT: joint blocks whose attention runs over the image tokens followed by the text tokens (CLIP-L,
CLIP-G and T5), no rotary embedding (positions are added to the patches); SD3.5 medium adds an image-only
second attention (`attn2`) in its first 13 blocks. Cross-frame attention goes on both
(`v2v.diffusion.dit_attention.JointCrossFrameProcessor`). Classifier-free guidance puts the unconditional half
of the batch first, as the UNet families do.

diffusers has no SD3 ControlNet img2img pipeline (only text-to-image and inpainting ones), so v2v takes no
ControlNet with SD3: `v2v restyle --controlnet` says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.dit import DiffusionTransformer
from v2v.diffusion.registry import Defaults, ModelInfo, register

if TYPE_CHECKING:
    from v2v.diffusion.dit_attention import DiTCrossFrameProcessor

SD3_PIPELINES = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline",
                 "StableDiffusion3ControlNetPipeline", "StableDiffusion3PAGPipeline")  # fmt: skip
SD3_ORIGINAL = "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"  # single files in Stability's layout
SD3_DIFFUSERS = "transformer_blocks.0.attn.add_q_proj.weight"  # a bare transformer file in diffusers' layout


class StableDiffusion3(DiffusionTransformer):
    name = "sd3"
    title = "Stable Diffusion 3/3.5"
    pipelines = {"restyle": "StableDiffusion3Img2ImgPipeline"}
    # diffusers' SD3 settings; bf16 on CUDA (as Stability ships 3.5); sides: the VAE's 8 x 2x2 patches
    defaults = Defaults(steps=28, guidance=7.0, strength=0.6, half=False, multiple=16, tile=1024, tile_overlap=256)
    checkpoint_configs = "stabilityai/stable-diffusion-3.5-medium"
    packed_latents = False  # the pipeline denoises the latent image itself; the transformer patches it
    max_sequence_length = 256  # T5 tokens, as diffusers' SD3 pipelines default
    text_tokenizer = "tokenizer_3"

    def recognise(self, info: ModelInfo) -> bool:
        if info.is_file:
            return info.has(SD3_ORIGINAL) or (info.has(SD3_DIFFUSERS) and info.has("pos_embed.pos_embed"))
        return info.class_name in SD3_PIPELINES

    def cross_frame_processor(self) -> type[DiTCrossFrameProcessor]:
        from v2v.diffusion.dit_attention import JointCrossFrameProcessor

        return JointCrossFrameProcessor

    def encode_text(self, pipe: Any, prompt: str, negative: str | None, **options: Any) -> dict[str, Any]:
        encoded = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=pipe._execution_device, num_images_per_prompt=1,
            do_classifier_free_guidance=negative is not None, negative_prompt=negative,
            max_sequence_length=options["max_sequence_length"],
        )  # fmt: skip
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        return dict(zip(names, encoded, strict=True))


register(StableDiffusion3())
