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
    """SD's image VAE over (1, 3, T, H, W) frames, a frame at a time. With ControlNets (`makers`: the control map
    functions, one per net) it also keeps the control maps of the last `keep` frames encoded: a window's frames are
    always the last ones encoded when it is denoised (`WindowChain` runs a window on the latent frame that fills it),
    so `window_maps(T)` are its maps. The maps are the state carried to a resumed run."""

    def __init__(self, vae: Any, makers: list[Any] = (), keep: int = 0) -> None:  # type: ignore[assignment]
        from collections import deque

        self.vae, self.makers = vae, list(makers)
        self.maps: deque[list[Any]] = deque(maxlen=max(keep, 1))  # per frame: one map per ControlNet

    def reset(self) -> None:
        self.maps.clear()

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames in [-1, 1] to (1, 4, T, h, w): the posterior's mode."""
        import torch

        for i in range(frames.shape[2]) if self.makers else ():
            picture = ((frames[:, :, i] + 1) / 2).float()  # (1, 3, H, W) in [0, 1], as the control makers take
            self.maps.append([make(picture)[0] for make in self.makers])
        return torch.stack([self.vae.encode(frames[:, :, i]).latent_dist.mode() for i in range(frames.shape[2])], 2)

    def window_maps(self, frames: int) -> list[Any]:
        """Per ControlNet, the (frames, 3, H, W) control maps of the last `frames` frames encoded."""
        import torch

        last = list(self.maps)[-frames:]
        return [torch.stack([maps[net] for maps in last]) for net in range(len(self.makers))]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, 4, T, h, w) latents to (1, 3, T, H, W) frames in about [-1, 1]."""
        import torch

        return torch.stack([self.vae.decode(latents[:, :, i]).sample for i in range(latents.shape[2])], 2)

    def state(self) -> dict[str, Any]:
        return {"maps": [[m.cpu() for m in maps] for maps in self.maps]}

    def load_state(self, state: dict[str, Any], device: Any) -> None:
        self.maps.clear()
        self.maps.extend([m.to(device) for m in maps] for maps in state["maps"])


class AnimateDiff(VideoDiffusion):
    name = "animatediff"
    title = "AnimateDiff"
    pipelines = {"restyle": "AnimateDiffVideoToVideoPipeline",
                 "restyle+controlnet": "AnimateDiffVideoToVideoControlNetPipeline"}  # fmt: skip
    controlnet_classes = ("ControlNetModel",)
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

    def refuse(self, config: Any) -> None:
        if config.control_modes:
            raise UsageError.naming("{control_modes} is for union ControlNets (FLUX); {title}'s SD 1.5 ControlNets "
                                    "take none", title=self.title)  # fmt: skip

    def check_window(self, window: int, overlap: int) -> None:
        if window < 2:
            raise ParameterError("window", f"must be at least 2 frames for {self.title}'s motion modules, got {window}")
        if not 0 <= overlap < window:
            raise ParameterError("window_overlap", f"must be from 0 to the window's {window} frames less one, got "
                                                   f"{overlap}")  # fmt: skip

    def load_video(self, info: Any, kind: str, config: Any, *, device: Any, dtype: Any) -> Any:
        """A saved AnimateDiff folder as it is; an SD 1.5 base with the motion adapter `config.motion_adapter`
        (`from_pipe`, as diffusers' AnimateDiff examples build it) and the ControlNets of `config.controlnets`, with
        their control map functions (`pipe.v2v_control_makers`; per frame: `--control-norm shot` would rescale a
        map by what the shot showed before, which a resumed window could not know)."""
        from v2v.diffusion import control
        from v2v.diffusion.families.sd import StableDiffusion

        sd = StableDiffusion()
        nets = [sd.load_controlnet(name, dtype, config.model) for name in config.controlnets]
        if self.recognise(info):
            if config.motion_adapter:
                raise UsageError.naming("{model} is an AnimateDiff pipeline with its motion adapter; drop "
                                        "{motion_adapter}")  # fmt: skip
            pipe = self.load(info, kind, nets, model=config.model, device=device, dtype=dtype,
                             model_config=config.model_config)  # fmt: skip
        else:
            pipe = self._with_adapter(info, kind, config, nets, device=device, dtype=dtype)
        for net, name in zip(nets, config.controlnets, strict=True):
            sd.check_controlnet(net, pipe, name, config.model)
        pipe.v2v_control_makers = [
            control.make_control(name, device=device, dtype=dtype, depth_model=config.depth_model,
                                 pose_model=config.pose_model, norm="frame")
            for name in (config.control_kinds if nets else [])
        ]  # fmt: skip
        pipe.v2v_window = config.window or self.window  # the control maps kept: a window's
        pipe.v2v_control_scales = config.control_scales * (len(nets) if len(config.control_scales) == 1 else 1)
        if any(isinstance(make, control.ControlVideo) for make in pipe.v2v_control_makers):
            raise UsageError.naming("{title} takes control maps made from the frames (canny, depth, ...), not a "
                                    "control video yet; pass a control name in {controls}", title=self.title)
        return pipe

    def _with_adapter(self, info: Any, kind: str, config: Any, nets: list[Any], *, device: Any, dtype: Any) -> Any:
        import diffusers

        from v2v.diffusion.families.sd import StableDiffusion
        from v2v.diffusion.models import dtype_argument, first_line, resolve_path

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
        nets_argument = {"controlnet": nets if len(nets) > 1 else nets[0]} if nets else {}
        pipe = getattr(diffusers, self.pipelines[kind]).from_pipe(base, motion_adapter=adapter, **nets_argument)
        pipe.set_progress_bar_config(disable=True)
        if pipe.unet.dtype != dtype:  # the UNet with motion modules is built anew, in float32
            pipe.unet.to(dtype=dtype)
        return pipe.to(device)

    # --- the model's parts -----------------------------------------------------------------------------------

    def streaming_vae(self, pipe: Any) -> Any:
        pipe.v2v_frame_vae = FrameVAE(pipe.vae, pipe.v2v_control_makers, keep=pipe.v2v_window)
        return pipe.v2v_frame_vae

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
        maps = pipe.v2v_frame_vae.window_maps(frames) if pipe.v2v_control_makers else []
        copies = 2 if negative is not None else 1
        maps = [torch.cat([m.to(device, dtype)] * copies) for m in maps]
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * copies)
            model_input = scheduler.scale_model_input(model_input, t)
            residuals = {}
            if maps:  # the ControlNet sees each frame of the window as an image, as the pipeline hands it over
                frame_input = model_input.transpose(1, 2).reshape(-1, *model_input.shape[1:2], *model_input.shape[3:])
                scales = pipe.v2v_control_scales
                down, mid = pipe.controlnet(frame_input, t, encoder_hidden_states=text,
                                            controlnet_cond=maps if len(maps) > 1 else maps[0],
                                            conditioning_scale=scales if len(maps) > 1 else scales[0],
                                            guess_mode=False, return_dict=False)  # fmt: skip
                residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            prediction = pipe.unet(model_input, t, encoder_hidden_states=text, **residuals).sample
            if negative is not None:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance * (conditional - unconditional)
            latents = scheduler.step(prediction, t, latents, **step_options).prev_sample
            if held and i + 1 < len(timesteps):  # the overlap held to the previous window, at the next step's level
                latents[:, :, :held] = noised(scheduler, hold, timesteps[i + 1 : i + 2], noise[:, :, :held])
        return latents.to(torch.float32)


register(AnimateDiff())
