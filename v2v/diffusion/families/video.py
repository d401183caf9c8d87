"""What the video diffusion families share: a model that denoises a window of frames together, behind
`v2v.diffusion.video_stage.VideoModelStage` (windows over a clip of any length). `wan.py` subclasses
`VideoDiffusion`; it registers nothing.

A video family says, besides what every family says (recognition, loading, pipelines per kind, defaults):

- its frame rule: `temporal` (the VAE's temporal compression: 4 for Wan) and `frames_fit(n)` (4k+1 for Wan), the
  default window and overlap in frames (`window`, `overlap`);
- its VAE, streamed (`streaming_vae`): encode chunk by chunk and decode latent frame by latent frame, carrying the
  causal cache, and the latents' normalisation (`normalise` / `denormalise`);
- its prompt encoding, once per run (`encode_prompt`);
- its denoising of one window (`denoise`): what its diffusers pipeline does between "prepare latents" and "decode",
  step for step, with the window's first `hold` latent frames (the previous window's final latents over the overlap)
  put back, noised to the next step's level, after every step but the last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.registry import Family
from v2v.errors import ParameterError

if TYPE_CHECKING:
    import torch


class VideoDiffusion(Family):
    """A family whose pipeline denoises a window of frames together (see the module docstring)."""

    video = True
    streams = True  # the VAE streams (chunk by chunk, caches carried); False: windows encoded and decoded whole
    temporal = 4  # frames per latent frame (the VAE's temporal compression)
    window = 81  # default frames a window
    overlap = 16  # default frames of overlap (a multiple of `temporal`)
    max_sequence_length = 512  # text tokens the prompt is padded to (at most the tokenizer's own limit)

    def frames_fit(self, frames: int) -> bool:
        """Whether a window of `frames` frames follows the family's frame rule (k * temporal + 1)."""
        return frames >= 1 and (frames - 1) % self.temporal == 0

    def check_window(self, window: int, overlap: int) -> None:
        """ParameterError (one line) for a window or overlap the family cannot take."""
        rule = f"{self.temporal}k+1"
        if not self.frames_fit(window):
            raise ParameterError("window", f"must follow {self.title}'s frame rule {rule} (e.g. {self.window}), "
                                           f"got {window}")  # fmt: skip
        if overlap < 0 or overlap % self.temporal:
            raise ParameterError("window_overlap", f"must be a multiple of {self.temporal} (a whole latent frame "
                                                   f"of {self.title}'s VAE), got {overlap}")  # fmt: skip
        if overlap >= window - 1:
            raise ParameterError("window_overlap", f"must be smaller than the window's {window - 1} new frames, got "
                                                   f"{overlap}")  # fmt: skip

    def kind(self, base: str, controlnets: int) -> str:
        from v2v.errors import UsageError

        if controlnets:
            raise UsageError.naming("{title} models take no ControlNet; drop {controlnets}", title=self.title)
        return super().kind(base, 0)

    def refuse(self, config: Any) -> None:
        """UsageError (one line) for an option that means nothing for the family (the stage has refused the image
        stages' options already)."""

    def load_video(self, info: Any, kind: str, config: Any, *, device: Any, dtype: Any) -> Any:
        """The pipeline for `config` (a family that loads more than the base model, a motion adapter, overrides)."""
        return self.load(info, kind, [], model=config.model, device=device, dtype=dtype,
                         model_config=config.model_config)  # fmt: skip

    # --- the model's parts -----------------------------------------------------------------------------------

    def streaming_vae(self, pipe: Any) -> Any:
        """The VAE streamed (an object with `reset`, `encode`, `decode`, `state`, `load_state`)."""
        raise NotImplementedError

    def normalise(self, pipe: Any, moments: torch.Tensor) -> torch.Tensor:
        """The VAE's latents as the transformer takes them."""
        raise NotImplementedError

    def denormalise(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """`normalise` undone, in the VAE's dtype, for decoding."""
        raise NotImplementedError

    def encode_prompt(self, pipe: Any, prompt: str, negative_prompt: str, guided: bool) -> tuple[Any, Any]:
        """(prompt embeds, negative embeds or None), in the transformer's dtype: once per run."""
        raise NotImplementedError

    def denoise(
        self, pipe: Any, clean: torch.Tensor, noise: torch.Tensor, embeds: tuple[Any, Any], *, steps: int,
        strength: float, guidance: float, hold: torch.Tensor | None,
    ) -> torch.Tensor:
        """A window's final latents from its clean (normalised) latents and noise (both (1, C, T, h, w), float32)."""
        raise NotImplementedError


def noised(scheduler: Any, latents: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`latents` noised to `timestep`'s level as the scheduler does it (DDPM-style `add_noise`, flow `scale_noise`)."""
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(latents, noise, timestep)
    return scheduler.scale_noise(latents, timestep, noise)
