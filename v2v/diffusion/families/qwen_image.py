"""Qwen-Image-Edit: instruction editing with `QwenImageEditPipeline`. The source frame is the image the editor
sees twice: Qwen2.5-VL reads it with the instruction, and its VAE latents (at about a megapixel, as the pipeline
always resizes them) follow the noise in the transformer's sequence. Guidance is true classifier-free guidance:
the transformer runs a second time per step on a negative prompt (" " unless one is given).

Cross-frame attention goes on every double-stream block (`v2v.diffusion.dit_attention.QwenCrossFrameProcessor`):
text first, rotary frequencies of their own for image and text tokens, a padding mask on the text. Each of the two
calls per step gets its own bank slot, so the prompt's pass and the negative prompt's never mix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.dit import DiffusionTransformer
from v2v.diffusion.registry import Batch, Defaults, ModelInfo, register

if TYPE_CHECKING:
    from v2v.diffusion.dit_attention import DiTCrossFrameProcessor

EDIT_PIPELINES = ("QwenImageEditPipeline",)
REFERENCE_AREA = 1024 * 1024  # QwenImageEditPipeline resizes the source to this area (sides multiples of 32)


class QwenImageEdit(DiffusionTransformer):
    name = "qwen-image-edit"
    title = "Qwen-Image-Edit"
    pipelines = {"edit": "QwenImageEditPipeline"}
    # diffusers' settings; bf16 on CUDA
    defaults = Defaults(steps=50, guidance=4.0, half=False, multiple=16, tile=1024, tile_overlap=256)
    tileable = False  # the source image's tokens share the sequence: not cut into tiles
    packed_latents = True  # the pipeline packs 2x2 patches of the latent image into tokens
    text_reads_image = True  # Qwen2.5-VL reads the frame with the instruction: an encoding a frame, by design
    lora_marker = "img_mlp"

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and info.class_name in EDIT_PIPELINES

    def cross_frame_processor(self) -> type[DiTCrossFrameProcessor]:
        from v2v.diffusion.dit_attention import QwenCrossFrameProcessor

        return QwenCrossFrameProcessor

    def image_tokens(self, pipe: Any, height: int, width: int) -> int:
        """The result's tokens and the source's, which the pipeline encodes at about a megapixel."""
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

        ref_width, ref_height, _ = calculate_dimensions(REFERENCE_AREA, width / height)
        factor = int(getattr(pipe, "vae_scale_factor", 8)) * self.patch
        return super().image_tokens(pipe, height, width) + (ref_height // factor) * (ref_width // factor)

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
        from PIL import Image

        from v2v.frames import tensor_to_images

        height, width = batch.images.shape[-2:]
        guided = self.guided(pipe, batch.guidance, batch.image_guidance)
        # The pipeline takes PIL images only, and resizes a single image to its megapixel source size itself but
        # leaves a list's images as they are for Qwen2.5-VL: resize them here as it would, so that a batch of frames
        # gives what each frame alone gives.
        ref_width, ref_height, _ = calculate_dimensions(REFERENCE_AREA, int(width) / int(height))
        images = [
            pipe.image_processor.resize(Image.fromarray(image), ref_height, ref_width)
            for image in tensor_to_images(batch.images)
        ]
        arguments = super().call_arguments(pipe, batch)
        del arguments["guidance_scale"]  # not guidance-distilled: the guidance is true CFG's scale
        arguments["image"] = images
        arguments["negative_prompt"] = [batch.negative_prompt or " "] * batch.count if guided else None
        arguments["true_cfg_scale"] = batch.guidance
        return arguments


register(QwenImageEdit())
