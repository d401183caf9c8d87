"""Lucy Edit (`LucyEditPipeline`, Wan 2.2-based): instruction edits of video ("make the car red") through
`v2v edit`. The source's latents enter beside the noise, channel by channel (the transformer reads 2 x z channels),
and the video is made from pure noise: there is no strength.

Its VAE is Wan's (2.1's for tiny models, 2.2's with 2x2 patches for Lucy Edit Dev), causal, streamed as the `wan`
family streams it; windows of 4k+1 frames, sides of the VAE's factor times the transformer's patch (32 for Lucy
Edit Dev). The denoising loop below is `LucyEditPipeline.__call__`'s, with the overlap's latents put back after each
step as Wan video-to-video puts them back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.video import noised
from v2v.diffusion.families.wan import Wan
from v2v.diffusion.registry import Defaults, ModelInfo, register
from v2v.errors import UsageError

if TYPE_CHECKING:
    import torch


class LucyEdit(Wan):
    name = "lucy_edit"
    title = "Lucy Edit"
    pipelines = {"edit": "LucyEditPipeline"}
    # LucyEditPipeline's own settings (50 steps, guidance 5); bf16 on CUDA as Wan 2.2 ships
    defaults = Defaults(steps=50, guidance=5.0, half=False)
    window = 81
    overlap = 16

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and info.class_name == "LucyEditPipeline"

    def multiple(self, pipe: Any) -> int:
        return int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size[1])

    def refuse(self, config: Any) -> None:
        if config.image_guidance is not None:
            raise UsageError.naming("{title} reads the source video beside the noise and takes no {image_guidance}; "
                                    "drop it", title=self.title)  # fmt: skip

    def denoise(
        self, pipe: Any, clean: torch.Tensor, noise: torch.Tensor, embeds: tuple[Any, Any], *, steps: int,
        strength: float, guidance: float, hold: torch.Tensor | None,
    ) -> torch.Tensor:
        import torch

        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=clean.device)
        timesteps = scheduler.timesteps
        held = 0 if hold is None else hold.shape[2]
        latents = noise.clone()
        if held:
            latents[:, :, :held] = noised(scheduler, hold, timesteps[:1], noise[:, :, :held])
        boundary = None
        if pipe.config.boundary_ratio is not None:  # Wan 2.2 A14B: the second transformer below the boundary
            boundary = pipe.config.boundary_ratio * scheduler.config.num_train_timesteps
        positive, negative = embeds
        dtype = (pipe.transformer if pipe.transformer is not None else pipe.transformer_2).dtype
        for i, t in enumerate(timesteps):
            model = pipe.transformer if boundary is None or t >= boundary else pipe.transformer_2
            model_input = torch.cat([latents, clean], dim=1).to(dtype)
            if pipe.config.expand_timesteps:  # Wan 2.2 TI2V: a timestep per token (all equal: no first-frame mask)
                timestep = t.expand(latents.shape[2] * (latents.shape[3] // 2) * (latents.shape[4] // 2))[None]
            else:
                timestep = t.expand(latents.shape[0])
            prediction = model(hidden_states=model_input, timestep=timestep, encoder_hidden_states=positive,
                               attention_kwargs=None, return_dict=False)[0]  # fmt: skip
            if negative is not None:
                unconditional = model(hidden_states=model_input, timestep=timestep, encoder_hidden_states=negative,
                                      attention_kwargs=None, return_dict=False)[0]  # fmt: skip
                prediction = unconditional + guidance * (prediction - unconditional)
            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
            if held and i + 1 < len(timesteps):  # the overlap held to the previous window, at the next step's level
                latents[:, :, :held] = noised(scheduler, hold, timesteps[i + 1 : i + 2], noise[:, :, :held])
        return latents


register(LucyEdit())
