"""What the diffusion-transformer (DiT) families share: cross-frame attention on the attention layers each family
picks, with the processor class it names (`v2v.diffusion.dit_attention`), the bank's shapes from the image tokens a
frame makes, packed latents, the T5 prompt length, and the keyword arguments every DiT pipeline call takes.
`flux.py`, `flux_kontext.py`, `sd3.py` and `qwen_image.py` subclass `DiffusionTransformer`; it registers nothing."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from v2v.diffusion.registry import Batch, Family

if TYPE_CHECKING:
    import torch

    from v2v.diffusion.attention import FrameBank
    from v2v.diffusion.dit_attention import DiTCrossFrameProcessor


class DiffusionTransformer(Family):
    """A family whose denoiser is `pipe.transformer` with joint text-image attention."""

    patch = 2  # latent pixels per image token along each side (2x2 packing or patches)
    text_tokenizer = "tokenizer_2"  # the pipeline's T5 tokenizer attribute
    max_sequence_length = 512  # T5 tokens a prompt is padded to, at most
    # whether the pipeline's latents are (B, tokens, 4C) with each token a 2x2 patch of the VAE's latent image,
    # packed row-major (FLUX, Qwen-Image), rather than the (B, C, h, w) image itself (SD3 patches inside)
    packed_latents = False
    lora_marker = ""  # a layer name only this family's LoRAs have (to name the family of a LoRA another refuses)

    def claims_lora(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        return bool(self.lora_marker) and any(self.lora_marker in key for key in shapes)

    def cross_frame_processor(self) -> type[DiTCrossFrameProcessor]:
        """The processor class that gives the layers `gets_cross_frame` picks cross-frame attention: one of
        `dit_attention`'s, or a `dit_attention.DiTCrossFrameProcessor` subclass of the family's own (import it here,
        not at module level: torch is heavy)."""
        raise NotImplementedError

    def gets_cross_frame(self, layer: str) -> bool:
        """Whether the attention layer `layer` (a key of `transformer.attn_processors`) gets cross-frame attention.
        Base: every attention of the `transformer_blocks` (SD3, Qwen-Image)."""
        return layer.startswith("transformer_blocks.")

    def cross_frame_attention(self, pipe: Any, bank: FrameBank) -> AbstractContextManager[Any]:
        from v2v.diffusion.dit_attention import dit_cross_frame_attention

        return dit_cross_frame_attention(pipe.transformer, bank, self, pipe.scheduler)

    def image_tokens(self, pipe: Any, height: int, width: int) -> int:
        """Image tokens one frame of height x width pixels makes in the transformer's sequence."""
        factor = int(getattr(pipe, "vae_scale_factor", 8)) * self.patch
        return (height // factor) * (width // factor)

    def bank_shapes(self, pipe: Any, height: int, width: int) -> list[tuple[int, int]]:
        from v2v.diffusion.dit_attention import transformer_bank_shapes

        tokens = self.image_tokens(pipe, height, width)
        return transformer_bank_shapes(pipe.transformer, self, tokens)

    def unpack_latents(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if not self.packed_latents:
            return latents
        patch, factor = self.patch, int(getattr(pipe, "vae_scale_factor", 8)) * self.patch
        batch, _, width_in = latents.shape
        channels = width_in // patch**2
        rows, columns = height // factor, width // factor
        grid = latents.view(batch, rows, columns, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
        return grid.reshape(batch, channels, rows * patch, columns * patch)

    def pack_latents(self, pipe: Any, grid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if not self.packed_latents:
            return grid
        patch = self.patch
        batch, channels, height, width = grid.shape
        packed = grid.view(batch, channels, height // patch, patch, width // patch, patch).permute(0, 2, 4, 1, 3, 5)
        return packed.reshape(like.shape)

    def text_tokens(self, pipe: Any) -> int:
        """T5 tokens a prompt is padded to: `max_sequence_length`, or the T5 tokenizer's own limit if lower."""
        tokenizer = getattr(pipe, self.text_tokenizer, None)
        return min(self.max_sequence_length, int(getattr(tokenizer, "model_max_length", self.max_sequence_length)))

    def encode_text(self, pipe: Any, prompt: str, negative: str | None, **options: Any) -> dict[str, Any]:
        """FLUX's encoding (CLIP's pooled vector and T5's tokens), as its pipelines call it; SD3 overrides it."""
        device, tokens = pipe._execution_device, options["max_sequence_length"]
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device, max_sequence_length=tokens)
        encoded = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if negative is not None:
            embeds, pooled, _ = pipe.encode_prompt(prompt=negative, prompt_2=None, device=device,
                                                   max_sequence_length=tokens)  # fmt: skip
            encoded.update(negative_prompt_embeds=embeds, negative_pooled_prompt_embeds=pooled)
        return encoded

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        """What every DiT pipeline call takes: the prompt for each frame (as embeddings, encoded once a run:
        `text_arguments`), the frames at their (padded) size, steps, guidance, generators and the T5 length; `strength`
        for the img2img kinds, the negative prompt when the call is guided, and with `--true-cfg` (a
        guidance-distilled family's `true_cfg_kinds`) the negative prompt and `true_cfg_scale` (diffusers then runs
        the transformer a second time a step on the negative prompt and takes negative + scale x (positive -
        negative)). Families add what their pipeline takes besides, or drop what it does not take."""
        height, width = batch.images.shape[-2:]
        negative_pass = batch.true_cfg is not None or self.guided(pipe, batch.guidance, batch.image_guidance)
        tokens = self.text_tokens(pipe)
        arguments: dict[str, Any] = dict(
            **self.text_arguments(pipe, batch, batch.negative_prompt if negative_pass else None,
                                  max_sequence_length=tokens),
            image=batch.images,
            height=int(height),
            width=int(width),
            num_inference_steps=batch.steps,
            guidance_scale=batch.guidance,
            generator=batch.generators,
            output_type="pt",
            max_sequence_length=tokens,
        )
        if batch.kind.startswith(("restyle", "inpaint")):  # denoised from the noised frame, not from noise
            arguments["strength"] = batch.strength
        if batch.true_cfg is not None:
            arguments["true_cfg_scale"] = batch.true_cfg
        return arguments
