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
    """Encoder and decoder of an `AutoencoderKLWan`, each with its own caches carried across calls: one per spatial
    tile when the VAE's tiling is on (`vae.enable_tiling()`, as diffusers' `tiled_encode`/`tiled_decode` cut and
    blend them), else one for the whole frame."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        """Start a new clip (a new shot): empty caches, next encode is the lone first frame."""
        self.encoder_caches: dict[tuple[int, int], list[Any]] = {}
        self.decoder_caches: dict[tuple[int, int], list[Any]] = {}
        self.encoded = 0  # encoder calls made (latent frames out)
        self.decoded = 0

    def _cache(self, caches: dict[tuple[int, int], list[Any]], tile: tuple[int, int], part: str) -> list[Any]:
        if tile not in caches:
            caches[tile] = [None] * self.vae._cached_conv_counts[part]
        return caches[tile]

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
        height, width = frames.shape[-2:]
        size_h, size_w = vae.tile_sample_min_height, vae.tile_sample_min_width
        if not (vae.use_tiling and (width > size_w or height > size_h)):
            out = vae.encoder(frames, feat_cache=self._cache(self.encoder_caches, (0, 0), "encoder"), feat_idx=[0])
            moments = vae.quant_conv(out)  # a 1x1x1 convolution: per chunk or per clip alike
        else:  # diffusers' tiled_encode, one chunk at a time, each tile with its own cache
            factor = vae.spatial_compression_ratio // (vae.config.patch_size or 1)
            stride_h, stride_w = vae.tile_sample_stride_height, vae.tile_sample_stride_width
            rows = [[vae.quant_conv(vae.encoder(frames[:, :, :, i : i + size_h, j : j + size_w],
                                                feat_cache=self._cache(self.encoder_caches, (i, j), "encoder"),
                                                feat_idx=[0]))
                     for j in range(0, width, stride_w)] for i in range(0, height, stride_h)]  # fmt: skip
            moments = _blended(vae, rows, (size_h - stride_h) // factor, (size_w - stride_w) // factor,
                               stride_h // factor, stride_w // factor)[:, :, :, : height // factor, : width // factor]
        self.encoded += 1
        return moments[:, : vae.config.z_dim]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, z, T, h, w) latents (any T) to frames (1, 3, T', H, W) in [-1, 1]: 1 frame for the clip's first latent
        frame, 4 for each after."""
        vae = self.vae
        height, width = latents.shape[-2:]
        factor = vae.spatial_compression_ratio
        size_h, size_w = vae.tile_sample_min_height // factor, vae.tile_sample_min_width // factor
        tiled = vae.use_tiling and (width > size_w or height > size_h)
        stride_h, stride_w = (vae.tile_sample_stride_height // factor, vae.tile_sample_stride_width // factor)
        outs = []
        for k in range(latents.shape[2]):
            frame = latents[:, :, k : k + 1]
            if not tiled:
                cache = self._cache(self.decoder_caches, (0, 0), "decoder")
                outs.append(vae.decoder(vae.post_quant_conv(frame), feat_cache=cache, feat_idx=[0],
                                        first_chunk=self.decoded == 0))  # fmt: skip
            else:  # diffusers' tiled_decode, one latent frame at a time, each tile with its own cache
                patch = vae.config.patch_size or 1
                rows = [[vae.decoder(vae.post_quant_conv(frame[:, :, :, i : i + size_h, j : j + size_w]),
                                     feat_cache=self._cache(self.decoder_caches, (i, j), "decoder"), feat_idx=[0],
                                     first_chunk=self.decoded == 0)
                         for j in range(0, width, stride_w)] for i in range(0, height, stride_h)]  # fmt: skip
                sample_stride_h = vae.tile_sample_stride_height // patch
                sample_stride_w = vae.tile_sample_stride_width // patch
                outs.append(_blended(vae, rows, vae.tile_sample_min_height // patch - sample_stride_h,
                                     vae.tile_sample_min_width // patch - sample_stride_w, sample_stride_h,
                                     sample_stride_w)[:, :, :, : height * factor // patch, : width * factor // patch])
            self.decoded += 1
        out = torch.cat(outs, 2)
        if vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.clamp(-1.0, 1.0)

    def state(self) -> dict[str, Any]:
        """The caches and counters, on the CPU (for the resume file)."""
        def cpu(caches: dict[tuple[int, int], list[Any]]) -> dict[tuple[int, int], list[Any]]:
            return {tile: [c.detach().cpu() if isinstance(c, torch.Tensor) else c for c in cache]
                    for tile, cache in caches.items()}  # fmt: skip

        return {"encoder": cpu(self.encoder_caches), "decoder": cpu(self.decoder_caches), "encoded": self.encoded,
                "decoded": self.decoded}  # fmt: skip

    def load_state(self, state: dict[str, Any], device: torch.device) -> None:
        def back(caches: dict[tuple[int, int], list[Any]]) -> dict[tuple[int, int], list[Any]]:
            return {tile: [c.to(device) if isinstance(c, torch.Tensor) else c for c in cache]
                    for tile, cache in caches.items()}  # fmt: skip

        self.encoder_caches, self.decoder_caches = back(state["encoder"]), back(state["decoder"])
        self.encoded, self.decoded = state["encoded"], state["decoded"]


def _blended(vae: Any, rows: list[list[torch.Tensor]], blend_h: int, blend_w: int, stride_h: int,
             stride_w: int) -> torch.Tensor:  # fmt: skip
    """Tiles blended with the tile above and to the left and cut to their stride, as diffusers' tiled VAE does (its
    `blend_v`/`blend_h` write into the lower/right tile, which later tiles then blend with)."""
    out_rows = []
    for i, row in enumerate(rows):
        out_row = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
            if j > 0:
                tile = vae.blend_h(row[j - 1], tile, blend_w)
            out_row.append(tile[:, :, :, :stride_h, :stride_w])
        out_rows.append(torch.cat(out_row, dim=-1))
    return torch.cat(out_rows, dim=3)
