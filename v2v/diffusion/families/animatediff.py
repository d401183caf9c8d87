"""AnimateDiff video-to-video (`AnimateDiffVideoToVideoPipeline`) on an SD 1.5 base: the SD 1.5 ecosystem (LoRAs,
fine-tunes) with a motion adapter (`--motion-adapter PATH`, a diffusers `MotionAdapter` folder) that links the frames
of a window. `v2v restyle --model SD15 --motion-adapter ADAPTER --prompt P` (or a saved AnimateDiff pipeline folder
as `--model`).

Its VAE is SD's, one frame at a time: nothing to carry between frames, so it streams as it is (`FrameVAE`), a
latent frame per frame (`temporal` 1), and a window is any number of frames up to the adapter's positional length
(`motion_max_seq_length`, 32 for AnimateDiff v1.5/v2/v3; trained on 16, the default window). The denoising loop
below is the pipeline's, with the overlap's latents put back after each step as Wan video-to-video puts them back.
The source is encoded to the posterior's mode (the pipeline samples it with its generator; the mode makes a frame's
latents the same whatever the windowing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.video import VideoDiffusion, noised
from v2v.diffusion.registry import Defaults, Family, ModelInfo, register
from v2v.errors import ModelError, ParameterError, UsageError

if TYPE_CHECKING:
    import torch

ANIMATEDIFF_FOLDERS = ("AnimateDiffPipeline", "AnimateDiffVideoToVideoPipeline",
                       "AnimateDiffVideoToVideoControlNetPipeline")  # fmt: skip


class FrameVAE:
    """SD's image VAE over (1, 3, T, H, W) frames, a frame at a time (no state to carry: `state` is empty)."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae

    def reset(self) -> None:
        pass

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames in [-1, 1] to (1, 4, T, h, w): the posterior's mode."""
        import torch

        return torch.stack([self.vae.encode(frames[:, :, i]).latent_dist.mode() for i in range(frames.shape[2])], 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, 4, T, h, w) latents to (1, 3, T, H, W) frames in about [-1, 1]."""
        import torch

        return torch.stack([self.vae.decode(latents[:, :, i]).sample for i in range(latents.shape[2])], 2)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], device: Any) -> None:
        pass


class AnimateDiff(VideoDiffusion):
    name = "animatediff"
    title = "AnimateDiff"
    pipelines = {"restyle": "AnimateDiffVideoToVideoPipeline"}
    # AnimateDiffVideoToVideoPipeline's settings (strength 0.8, guidance 7.5); SD's fp16 on CUDA; SD's 8x latent
    defaults = Defaults(steps=50, guidance=7.5, strength=0.8)
    animates = ("sd",)  # with a motion adapter, the base models of these families (`registry.detect`)
    animates_what = "an SD 1.5 base model"
    temporal = 1
    window = 16
    overlap = 4

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and info.class_name in ANIMATEDIFF_FOLDERS

    def kind(self, base: str, controlnets: int) -> str:
        return Family.kind(self, base, controlnets)

    def check_window(self, window: int, overlap: int) -> None:
        if window < 2:
            raise ParameterError("window", f"must be at least 2 frames for {self.title}'s motion modules, got {window}")
        if not 0 <= overlap < window:
            raise ParameterError("window_overlap", f"must be from 0 to the window's {window} frames less one, got "
                                                   f"{overlap}")  # fmt: skip

    def load_video(self, info: Any, kind: str, config: Any, *, device: Any, dtype: Any) -> Any:
        """A saved AnimateDiff folder as it is; an SD 1.5 base with the motion adapter `config.motion_adapter`
        (`from_pipe`, as diffusers' AnimateDiff examples build it)."""
        import diffusers

        from v2v.diffusion.families.sd import StableDiffusion
        from v2v.diffusion.models import dtype_argument, first_line, resolve_path

        if self.recognise(info):
            if config.motion_adapter:
                raise UsageError.naming("{model} is an AnimateDiff pipeline with its motion adapter; drop "
                                        "{motion_adapter}")  # fmt: skip
            return self.load(info, kind, [], model=config.model, device=device, dtype=dtype,
                             model_config=config.model_config)  # fmt: skip
        path = resolve_path(config.motion_adapter, "motion adapter")
        try:
            adapter = diffusers.MotionAdapter.from_pretrained(str(path), local_files_only=True, **dtype_argument(dtype))
        except Exception as exc:  # diffusers raises many kinds for a folder that is not a MotionAdapter
            raise ModelError.naming("cannot load motion adapter {path!r}: {why}", path=config.motion_adapter,
                                    why=first_line(exc)) from exc  # fmt: skip
        base = StableDiffusion().load(info, "restyle", [], model=config.model, device=device, dtype=dtype,
                                      model_config=config.model_config)  # fmt: skip
        if tuple(adapter.config.block_out_channels) != tuple(base.unet.config.block_out_channels):
            raise ModelError.naming("motion adapter {path!r} is for a UNet of widths {theirs}, {model!r}'s are {ours}; "
                                    "pass an adapter made for SD 1.5", path=config.motion_adapter,
                                    theirs=list(adapter.config.block_out_channels), model=config.model,
                                    ours=list(base.unet.config.block_out_channels))  # fmt: skip
        window = config.window or self.window
        if window > adapter.config.motion_max_seq_length:
            raise ParameterError("window", f"must be at most {adapter.config.motion_max_seq_length} frames, the "
                                           f"motion adapter's length, got {window}")  # fmt: skip
        pipe = getattr(diffusers, self.pipelines[kind]).from_pipe(base, motion_adapter=adapter)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device, dtype)

    # --- the model's parts -----------------------------------------------------------------------------------

    def streaming_vae(self, pipe: Any) -> Any:
        return FrameVAE(pipe.vae)

    def normalise(self, pipe: Any, moments: torch.Tensor) -> torch.Tensor:
        return pipe.vae.config.scaling_factor * moments.to(pipe.unet.dtype)

    def denormalise(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        return 1 / pipe.vae.config.scaling_factor * latents.to(pipe.vae.dtype)

    def encode_prompt(self, pipe: Any, prompt: str, negative_prompt: str, guided: bool) -> tuple[Any, Any]:
        positive, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, guided, negative_prompt or None)
        return positive, negative if guided else None

    def denoise(
        self, pipe: Any, clean: torch.Tensor, noise: torch.Tensor, embeds: tuple[Any, Any], *, steps: int,
        strength: float, guidance: float, hold: torch.Tensor | None,
    ) -> torch.Tensor:
        import torch
        from diffusers.pipelines.animatediff.pipeline_animatediff_video2video import retrieve_timesteps

        scheduler, device, dtype = pipe.scheduler, clean.device, pipe.unet.dtype
        frames = clean.shape[2]
        timesteps, count = retrieve_timesteps(scheduler, steps, device)
        timesteps, count = pipe.get_timesteps(count, timesteps, strength, device)
        clean, noise = clean.to(dtype), noise.to(dtype)
        held = 0 if hold is None else hold.shape[2]
        latents = noised(scheduler, clean, timesteps[:1], noise)
        if held:
            hold = hold.to(dtype)
            latents[:, :, :held] = noised(scheduler, hold, timesteps[:1], noise[:, :, :held])
        positive, negative = embeds
        text = positive if negative is None else torch.cat([negative, positive])
        text = text.repeat_interleave(repeats=frames, dim=0)
        step_options = pipe.prepare_extra_step_kwargs(None, 0.0)
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if negative is not None else latents
            model_input = scheduler.scale_model_input(model_input, t)
            prediction = pipe.unet(model_input, t, encoder_hidden_states=text).sample
            if negative is not None:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance * (conditional - unconditional)
            latents = scheduler.step(prediction, t, latents, **step_options).prev_sample
            if held and i + 1 < len(timesteps):  # the overlap held to the previous window, at the next step's level
                latents[:, :, :held] = noised(scheduler, hold, timesteps[i + 1 : i + 2], noise[:, :, :held])
        return latents.to(torch.float32)


register(AnimateDiff())
