"""What the diffusion-transformer (DiT) families share: cross-frame attention on their joint-attention layers
(`v2v.diffusion.dit_attention`), the bank's shapes from the image tokens a frame makes, and the T5 prompt length.
`flux.py`, `flux_kontext.py`, `sd3.py` and `qwen_image.py` subclass `DiffusionTransformer`; it registers nothing."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from v2v.diffusion.registry import Family

if TYPE_CHECKING:
    import torch

    from v2v.diffusion.attention import FrameBank


class DiffusionTransformer(Family):
    """A family whose denoiser is `pipe.transformer` with joint text-image attention."""

    attention_family = ""  # a key of `dit_attention.PROCESSORS`
    patch = 2  # latent pixels per image token along each side (2x2 packing or patches)
    text_tokenizer = "tokenizer_2"  # the pipeline's T5 tokenizer attribute
    max_sequence_length = 512  # T5 tokens a prompt is padded to, at most
    # whether the pipeline's latents are (B, tokens, 4C) with each token a 2x2 patch of the VAE's latent image,
    # packed row-major (FLUX, Qwen-Image), rather than the (B, C, h, w) image itself (SD3 patches inside)
    packed_latents = False

    def cross_frame_attention(self, pipe: Any, bank: FrameBank) -> AbstractContextManager[Any]:
        from v2v.diffusion.dit_attention import dit_cross_frame_attention

        return dit_cross_frame_attention(pipe.transformer, bank, self.attention_family)

    def image_tokens(self, pipe: Any, height: int, width: int) -> int:
        """Image tokens one frame of height x width pixels makes in the transformer's sequence."""
        factor = int(getattr(pipe, "vae_scale_factor", 8)) * self.patch
        return (height // factor) * (width // factor)

    def bank_shapes(self, pipe: Any, height: int, width: int) -> list[tuple[int, int]]:
        from v2v.diffusion.dit_attention import transformer_bank_shapes

        tokens = self.image_tokens(pipe, height, width)
        return transformer_bank_shapes(pipe.transformer, self.attention_family, tokens)

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
