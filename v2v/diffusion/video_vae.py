"""Wan's causal video VAE (`diffusers.AutoencoderKLWan`), streamed: encoded and decoded chunk by chunk with its
causal-convolution cache carried across calls, so a shot of any length costs one chunk's memory.

diffusers' `AutoencoderKLWan._encode` already runs the encoder over the clip in chunks (the first frame alone, then
4 frames at a time, each call reading and updating `feat_cache`, the last two frames every causal convolution saw)
and `_decode` one latent frame at a time the same way; it only clears the cache before and after the whole clip.
`StreamingWanVAE` keeps those caches itself between calls, so the same chunks give the same latents and frames as
the whole-clip calls (`tests/test_video_models.py` checks that), and `state()` / `load_state()` hand the caches to
the resume file.

    vae = StreamingWanVAE(pipe.vae)
    first = vae.encode(frames[:, :, :1])        # (1, 3, 1, H, W) in [-1, 1] -> (1, z, 1, h, w), the posterior's mode
    more = vae.encode(frames[:, :, 1:5])        # then 4 frames -> 1 latent frame
    video = vae.decode(latents[:, :, :1])       # latent frame 0 -> 1 frame; later ones -> 4 frames each
"""

from __future__ import annotations

from typing import Any

import torch

ENCODE_CHUNK = 4  # frames per encoder call after the first (the VAE's temporal compression)


class StreamingWanVAE:
    """Encoder and decoder of an `AutoencoderKLWan`, each with its own cache carried across calls."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        """Start a new clip (a new shot): empty caches, next encode is the lone first frame."""
        counts = self.vae._cached_conv_counts
        self.encoder_cache: list[Any] = [None] * counts["encoder"]
        self.decoder_cache: list[Any] = [None] * counts["decoder"]
        self.encoded = 0  # encoder calls made (latent frames out)
        self.decoded = 0

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(1, 3, T, H, W) frames in [-1, 1], T = 1 for the clip's first call and 4 after, to their latent frame
        (1, z, 1, h, w): the posterior's mode, as diffusers' video pipelines take it (`sample_mode="argmax"`)."""
        vae = self.vae
        expected = 1 if self.encoded == 0 else ENCODE_CHUNK
        if frames.shape[2] != expected:
            raise ValueError(f"encoder call {self.encoded} takes {expected} frame(s), got {frames.shape[2]}")
        if vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

            frames = patchify(frames, patch_size=vae.config.patch_size)
        out = vae.encoder(frames, feat_cache=self.encoder_cache, feat_idx=[0])
        self.encoded += 1
        moments = vae.quant_conv(out)  # a 1x1x1 convolution: per chunk or per clip alike
        return moments[:, : vae.config.z_dim]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, z, T, h, w) latents (any T) to frames (1, 3, T', H, W) in [-1, 1]: 1 frame for the clip's first latent
        frame, 4 for each after."""
        vae = self.vae
        x = vae.post_quant_conv(latents)
        outs = []
        for i in range(x.shape[2]):
            outs.append(vae.decoder(x[:, :, i : i + 1], feat_cache=self.decoder_cache, feat_idx=[0],
                                    first_chunk=self.decoded == 0))  # fmt: skip
            self.decoded += 1
        out = torch.cat(outs, 2)
        if vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.clamp(-1.0, 1.0)

    def state(self) -> dict[str, Any]:
        """The caches and counters, on the CPU (for the resume file)."""
        def cpu(cache: list[Any]) -> list[Any]:
            return [c.detach().cpu() if isinstance(c, torch.Tensor) else c for c in cache]

        return {"encoder": cpu(self.encoder_cache), "decoder": cpu(self.decoder_cache), "encoded": self.encoded,
                "decoded": self.decoded}  # fmt: skip

    def load_state(self, state: dict[str, Any], device: torch.device) -> None:
        def back(cache: list[Any]) -> list[Any]:
            return [c.to(device) if isinstance(c, torch.Tensor) else c for c in cache]

        self.encoder_cache, self.decoder_cache = back(state["encoder"]), back(state["decoder"])
        self.encoded, self.decoded = state["encoded"], state["decoded"]
