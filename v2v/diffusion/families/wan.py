"""Wan 2.1 / 2.2 video-to-video (`WanVideoToVideoPipeline`): plain video-to-video with `strength`, windows of 4k+1
frames (81 by default, Wan's own clip length), sides of 16 (the VAE's 8x and the transformer's 2x2 patches).

Its VAE is causal and streams (`v2v.diffusion.video_vae.StreamingWanVAE`); it runs in float32 whatever the
transformer's dtype, as diffusers' Wan examples load it. The denoising loop below is
`WanVideoToVideoPipeline.__call__`'s steps 4 to 6, with the overlap's latents put back after each step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.video import VideoDiffusion, noised
from v2v.diffusion.registry import Defaults, ModelInfo, register

if TYPE_CHECKING:
    import torch

WAN_V2V = ("WanVideoToVideoPipeline",)
WAN_TEXT_TO_VIDEO = ("WanPipeline",)  # the same components: a text-to-video folder restyles too


class Wan(VideoDiffusion):
    name = "wan"
    title = "Wan video-to-video"
    pipelines = {"restyle": "WanVideoToVideoPipeline"}
    # diffusers' WanVideoToVideoPipeline settings; bf16 on CUDA (as Wan ships); sides of 16
    defaults = Defaults(steps=50, guidance=5.0, strength=0.8, half=False, multiple=16)
    window = 81
    overlap = 16

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and info.class_name in WAN_V2V + WAN_TEXT_TO_VIDEO and (
            info.config("transformer").get("_class_name") == "WanTransformer3DModel"
            and not info.config("transformer").get("vace_layers")
        )

    def load(self, info: ModelInfo, kind: str, controlnets: list[Any], **options: Any) -> Any:
        import torch

        pipe = super().load(info, kind, controlnets, **options)
        if pipe.vae.dtype != torch.float32:  # Wan's VAE drifts in half precision; diffusers' examples keep it in fp32
            pipe.vae.to(torch.float32)
        return pipe

    # --- the model's parts -----------------------------------------------------------------------------------

    def streaming_vae(self, pipe: Any) -> Any:
        from v2v.diffusion.video_vae import StreamingWanVAE

        return StreamingWanVAE(pipe.vae)

    def _statistics(self, pipe: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent mean and 1/std, shaped to broadcast over (1, z, T, h, w), as the pipeline makes them."""
        import torch

        config = pipe.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
        return mean, inverse_std

    def normalise(self, pipe: Any, moments: torch.Tensor) -> torch.Tensor:
        import torch

        moments = moments.to(torch.float32)
        mean, inverse_std = self._statistics(pipe, moments)
        return (moments - mean) * inverse_std

    def denormalise(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(pipe.vae.dtype)
        mean, inverse_std = self._statistics(pipe, latents)
        return latents / inverse_std + mean

    def text_tokens(self, pipe: Any) -> int:
        return min(self.max_sequence_length, int(getattr(pipe.tokenizer, "model_max_length", 512)))

    def encode_prompt(self, pipe: Any, prompt: str, negative_prompt: str, guided: bool) -> tuple[Any, Any]:
        positive, negative = pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt or None, do_classifier_free_guidance=guided,
            num_videos_per_prompt=1, max_sequence_length=self.text_tokens(pipe), device=pipe._execution_device,
        )  # fmt: skip
        dtype = pipe.transformer.dtype
        return positive.to(dtype), None if negative is None else negative.to(dtype)

    def denoise(
        self, pipe: Any, clean: torch.Tensor, noise: torch.Tensor, embeds: tuple[Any, Any], *, steps: int,
        strength: float, guidance: float, hold: torch.Tensor | None,
    ) -> torch.Tensor:
        from diffusers.pipelines.wan.pipeline_wan_video2video import retrieve_timesteps

        scheduler, device = pipe.scheduler, clean.device
        # 4. Timesteps, cut by strength
        timesteps, count = retrieve_timesteps(scheduler, steps, device)
        timesteps, count = pipe.get_timesteps(count, timesteps, strength, device)

        # 5. The window's latents noised to the first step; the overlap from the previous window's final latents
        held = 0 if hold is None else hold.shape[2]
        latents = noised(scheduler, clean, timesteps[:1], noise)
        if held:
            latents[:, :, :held] = noised(scheduler, hold, timesteps[:1], noise[:, :, :held])
        # 6. Denoising loop
        positive, negative = embeds
        dtype = pipe.transformer.dtype
        for i, t in enumerate(timesteps):
            model_input = latents.to(dtype)
            timestep = t.expand(latents.shape[0])
            prediction = pipe.transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=positive,
                                          attention_kwargs=None, return_dict=False)[0]  # fmt: skip
            if negative is not None:
                unconditional = pipe.transformer(hidden_states=model_input, timestep=timestep,
                                                 encoder_hidden_states=negative, attention_kwargs=None,
                                                 return_dict=False)[0]  # fmt: skip
                prediction = unconditional + guidance * (prediction - unconditional)
            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
            if held and i + 1 < len(timesteps):  # the overlap held to the previous window, at the next step's level
                latents[:, :, :held] = noised(scheduler, hold, timesteps[i + 1 : i + 2], noise[:, :, :held])
        return latents


register(Wan())
