"""LTX-Video (`LTXConditionPipeline`): video-to-video as LTX's own multi-scale workflow runs it (the source's latents
passed as `latents` with `denoise_strength`), windows of 8k+1 frames (161 by default, the pipeline's clip length),
sides of 32 (the VAE's 32x: 4x4 patches and three 2x steps).

Continuity is LTX's own conditioning: the previous window's final latents over the overlap enter as a condition with a
strength (`hold_strength`, 1: held as they are), the pipeline's frame-index-0 condition but in latents, not pixels
re-encoded. Conditioned tokens get the timestep `min(t, (1 - strength) * 1000)` and keep their latents where that is
below the step's (the pipeline's `conditioning_mask`). The pipeline's light re-noising of hard conditions
(`image_cond_noise_scale`) draws fresh noise at every step; it is left out so that a frame's result does not depend on
the windowing's random draws (the stage's colour anchor holds the drift instead).

LTX's VAE cannot stream the Wan way (its decoder is not causal, its encoder carries no cache), so the stage encodes
and decodes each window whole (`v2v.diffusion.video_windows.WholeWindows`): a window's first latent frame is a lone
frame, the held latents are the next window's latent frames 1 on, and the `overlap + 1` frames windows share are
cross-faded in pixels. The denoising loop below is `LTXConditionPipeline.__call__`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.video import VideoDiffusion
from v2v.diffusion.registry import Defaults, ModelInfo, register

if TYPE_CHECKING:
    import torch

LTX_FOLDERS = ("LTXConditionPipeline", "LTXPipeline", "LTXImageToVideoPipeline")
FRAME_RATE = 25  # the frame rate LTX's positions are scaled by (the pipeline's default)


class WholeVAE:
    """LTX's VAE over a whole window: (1, 3, T, H, W) frames to latents (the posterior's mode) and back; nothing is
    carried between windows (`state` is empty)."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae

    def reset(self) -> None:
        pass

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames).latent_dist.mode()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        import torch

        # a timestep-conditioned decoder (LTX 0.9.1+) at the pipeline's default decode_timestep 0 and noise scale 0
        timestep = None
        if self.vae.config.timestep_conditioning:
            timestep = torch.zeros(1, device=latents.device, dtype=latents.dtype)
        return self.vae.decode(latents, timestep, return_dict=False)[0]

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], device: Any) -> None:
        pass


class LTXVideo(VideoDiffusion):
    name = "ltx"
    title = "LTX-Video"
    pipelines = {"restyle": "LTXConditionPipeline"}
    # LTXConditionPipeline's settings (50 steps, guidance 3); bf16 on CUDA as LTX ships; sides of 32
    defaults = Defaults(steps=50, guidance=3.0, strength=0.8, half=False, multiple=32)
    streams = False
    temporal = 8
    window = 161
    overlap = 24
    max_sequence_length = 256
    hold_strength = 1.0  # the previous window's latents as a condition of this strength

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and info.class_name in LTX_FOLDERS and (
            info.config("transformer").get("_class_name") == "LTXVideoTransformer3DModel"
        )

    # --- the model's parts -----------------------------------------------------------------------------------

    def streaming_vae(self, pipe: Any) -> Any:
        return WholeVAE(pipe.vae)

    def normalise(self, pipe: Any, moments: torch.Tensor) -> torch.Tensor:
        import torch

        return pipe._normalize_latents(moments, pipe.vae.latents_mean, pipe.vae.latents_std).to(torch.float32)

    def denormalise(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        latents = pipe._denormalize_latents(latents, pipe.vae.latents_mean, pipe.vae.latents_std,
                                            pipe.vae.config.scaling_factor)  # fmt: skip
        return latents.to(pipe.transformer.dtype).to(pipe.vae.dtype)

    def encode_prompt(self, pipe: Any, prompt: str, negative_prompt: str, guided: bool) -> tuple[Any, Any]:
        tokens = min(self.max_sequence_length, int(getattr(pipe.tokenizer, "model_max_length", 256)))
        positive, positive_mask, negative, negative_mask = pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt or None, do_classifier_free_guidance=guided,
            num_videos_per_prompt=1, max_sequence_length=tokens, device=pipe._execution_device,
        )  # fmt: skip
        return (positive, positive_mask), (negative, negative_mask) if guided else None

    def denoise(
        self, pipe: Any, clean: torch.Tensor, noise: torch.Tensor, embeds: tuple[Any, Any], *, steps: int,
        strength: float, guidance: float, hold: torch.Tensor | None,
    ) -> torch.Tensor:
        """`hold` (the previous window's final latents) stands for this window's latent frames 1 on."""
        import torch
        from diffusers.pipelines.ltx.pipeline_ltx_condition import linear_quadratic_schedule, retrieve_timesteps

        scheduler, device = pipe.scheduler, clean.device
        _, channels, frames, height, width = clean.shape
        # timesteps as the pipeline makes them, cut by denoise_strength
        timesteps, count = retrieve_timesteps(scheduler, steps, device, linear_quadratic_schedule(steps) * 1000)
        sigmas = scheduler.sigmas
        if strength < 1:
            sigmas, timesteps, count = pipe.get_timesteps(sigmas, timesteps, count, strength)
            sigma = sigmas[:1].repeat(1).to(device, torch.float32)
            latents = sigma * noise + (1 - sigma) * clean
        else:
            latents = noise
        held = 0 if hold is None else hold.shape[2]
        mask = None
        if held:  # the condition: latent frames 1..held lerped toward the held latents by the strength
            latents[:, :, 1 : 1 + held] = torch.lerp(latents[:, :, 1 : 1 + held], hold, self.hold_strength)
            by_frame = torch.zeros((1, frames), device=device, dtype=torch.float32)
            by_frame[:, 1 : 1 + held] = self.hold_strength
        patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        ids = pipe._prepare_video_ids(1, frames, height, width, patch_size=patch, patch_size_t=patch_t, device=device)
        if held:
            mask = by_frame.gather(1, ids[:, 0])
        ids = pipe._scale_video_ids(ids, scale_factor=pipe.vae_spatial_compression_ratio,
                                    scale_factor_t=pipe.vae_temporal_compression_ratio, frame_index=0, device=device)
        latents = pipe._pack_latents(latents, patch, patch_t)
        coords = ids.float()
        coords[:, 0] = coords[:, 0] * (1.0 / FRAME_RATE)
        (positive, positive_mask), unguided = embeds
        text, text_mask = positive, positive_mask
        if unguided is not None:
            text, text_mask = torch.cat([unguided[0], positive]), torch.cat([unguided[1], positive_mask])
            coords = torch.cat([coords, coords])
        copies = 2 if unguided is not None else 1
        for t in timesteps:
            model_input = torch.cat([latents] * copies).to(text.dtype)
            timestep = t.expand(model_input.shape[0]).unsqueeze(-1).float()
            if mask is not None:
                timestep = torch.min(timestep, (1 - torch.cat([mask] * copies)) * 1000.0)
            prediction = pipe.transformer(hidden_states=model_input, encoder_hidden_states=text, timestep=timestep,
                                          encoder_attention_mask=text_mask, video_coords=coords, attention_kwargs=None,
                                          return_dict=False)[0]  # fmt: skip
            if unguided is not None:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance * (conditional - unconditional)
                timestep, _ = timestep.chunk(2)
            denoised = scheduler.step(-prediction, t, latents, per_token_timesteps=timestep, return_dict=False)[0]
            if mask is not None:  # the conditioned tokens keep their latents while below the step's noise level
                latents = torch.where((t / 1000 - 1e-6 < (1.0 - mask)).unsqueeze(-1), denoised, latents)
            else:
                latents = denoised
        return pipe._unpack_latents(latents, frames, height, width, patch, patch_t).to(torch.float32)


register(LTXVideo())
