"""Wan 2.1 / 2.2 VACE (`WanVACEPipeline`, `WanVACETransformer3DModel`): a Wan that generates each window from noise,
guided by a context video, a mask video (1: generate, 0: keep) and reference images, all through its VACE blocks.
Windows, sizes, VAE and prompt are Wan's (`wan.py`).

What v2v hands it:

- the context video: the source frames (`v2v restyle` with no `--control`, logged once), or the maps of one
  `--control` (canny, depth, pose, ... or a control video: `v2v.diffusion.control`), made per frame by the stage;
- the mask: all ones (the whole frame is generated, following the context video); for `v2v inpaint`, the paint mask
  (a mask video, a sequence, a carried image or an inline mask: `v2v.inpaint.spec`), the source kept outside it;
- `--reference IMG`: a reference image, placed as the pipeline places it (fitted into a white canvas of the frame's
  size) and encoded once per run; `--control-scale` is the pipeline's `conditioning_scale`.

A window's clean latents (what `VideoModelStage` pushes per latent frame) pack, per latent frame, what the pipeline's
`prepare_video_latents` and `prepare_masks` make: the context video's inactive (`video * (1 - mask)`) and reactive
(`video * mask`) halves, each streamed through its own causal encoder cache, and the mask of the frames the latent
frame covers, 8x8 pixels folded into 64 channels. At the window the mask is picked per latent frame from the
window's 4k+1 frames as the pipeline picks it (nearest in time), so a clip that fits one window is the pipeline's
output exactly.

Continuity, VACE's way: over the overlap the window's context is the previous window's final latents (put in place
as its inactive half, a gray clip's latents as its reactive half) with mask 0, so the model keeps them and continues
from them; then the stage cross-fades the overlap. Nothing is re-encoded from pixels.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.wan import Wan
from v2v.diffusion.registry import Defaults, ModelInfo, register
from v2v.errors import InputError, ParameterError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

VACE_PIPELINES = ("WanVACEPipeline",)
MASK_FOLD = 8  # the VAE's spatial factor: each latent pixel's 8x8 mask pixels become 64 channels


class StreamingVaceVAE:
    """Wan's streamed VAE twice over: the context video's inactive and reactive halves are two clips, each with its own
    causal cache; frames are decoded by the first."""

    def __init__(self, vae: Any) -> None:
        from v2v.diffusion.video_vae import StreamingWanVAE

        self.inactive, self.reactive = StreamingWanVAE(vae), StreamingWanVAE(vae)

    def reset(self) -> None:
        self.inactive.reset()
        self.reactive.reset()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inactive.decode(latents)

    def state(self) -> dict[str, Any]:
        return {"inactive": self.inactive.state(), "reactive": self.reactive.state()}

    def load_state(self, state: dict[str, Any], device: Any) -> None:
        self.inactive.load_state(state["inactive"], device)
        self.reactive.load_state(state["reactive"], device)


class WanVace(Wan):
    name = "wan_vace"
    title = "Wan VACE"
    pipelines = {"restyle": "WanVACEPipeline", "inpaint": "WanVACEPipeline"}
    # diffusers' WanVACEPipeline settings: each window from noise (strength 1, all steps)
    defaults = Defaults(steps=50, guidance=5.0, strength=1.0, half=False, multiple=16)
    takes_reference = True
    takes_control = True  # one --control: its maps are the context video

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and (
            info.class_name in VACE_PIPELINES
            or info.config("transformer").get("_class_name") == "WanVACETransformer3DModel"
        )

    def refuse(self, config: Any) -> None:
        if config.strength != 1.0:
            raise ParameterError("strength", f"means nothing for {self.title}: it generates each window from noise, "
                                             "guided by the source as its context video (drop it; --control-scale "
                                             "sets how closely)")  # fmt: skip
        if config.reference:
            load_reference(config.reference)  # a missing or unreadable image fails now, before any frame is read
        if len(config.control_scales) != 1:
            raise ParameterError("control_scales", f"takes one value for {self.title} (its conditioning scale)")

    # --- the model's parts -----------------------------------------------------------------------------------

    def streaming_vae(self, pipe: Any) -> Any:
        return StreamingVaceVAE(pipe.vae)

    def latent_channels(self, pipe: Any, clean: torch.Tensor) -> int:
        return int(pipe.vae.config.z_dim)

    def encode_chunk(self, pipe: Any, vae: Any, video: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        """The chunk's latent frame: [inactive, reactive] latents (2 x z channels), then the mask of its frames
        (64 channels a frame, 4 frames: the first chunk's one frame repeated)."""
        import torch

        if mask is None:
            mask = torch.ones_like(video[:, :1])
        binary = torch.where(mask > 0.5, 1.0, 0.0).to(video.dtype)  # as prepare_video_latents thresholds it
        inactive = self.normalise(pipe, vae.inactive.encode(video * (1 - binary)))
        reactive = self.normalise(pipe, vae.reactive.encode(video * binary))
        folded = fold_mask(mask[0, 0].to(torch.float32))  # (64, n, h, w)
        folded = torch.cat([folded[:, :1]] * (4 - folded.shape[1]) + [folded], dim=1)
        packed = folded.reshape(1, -1, 1, *folded.shape[-2:])
        return torch.cat([inactive, reactive, packed.to(inactive.device)], dim=1).to(torch.float32)

    def source_latents(self, clean: torch.Tensor) -> torch.Tensor:
        z = clean.shape[1] - MASK_FOLD * MASK_FOLD * 4
        return clean[:, : z // 2] + clean[:, z // 2 : z]  # the context video's two halves, together

    def conditions(self, pipe: Any, config: Any, clean: torch.Tensor) -> dict[str, Any]:
        """The conditioning scale per VACE layer, and the reference image's latents and noise (none without one)."""
        import torch

        from v2v.diffusion.video_stage import noise_seed

        dtype, device = pipe.transformer.dtype, clean.device
        layers = len(pipe.transformer.config.vace_layers)
        scale = torch.tensor([float(config.control_scales[0])] * layers).to(device=device, dtype=dtype)
        out: dict[str, Any] = {"scale": scale, "reference": None, "gray": {}}
        mask = "the inpaint mask" if config.kind == "inpaint" else "the whole frame"
        context = f"the {config.controls[0]} maps" if config.controls else "the source frames"
        log.info("%s: %s are the context video (mask: %s)", self.title, context, mask)
        if config.reference:
            factor = pipe.vae_scale_factor_spatial
            height, width = clean.shape[-2] * factor, clean.shape[-1] * factor
            _, _, canvases = pipe.preprocess_conditions(None, None, load_reference(config.reference), 1, height, width,
                                                        1, torch.float32, device)  # fmt: skip
            canvas = canvases[0][0].to(pipe.vae.dtype)[None, :, None]  # (1, 3, 1, H, W)
            latent = self.normalise(pipe, pipe.vae.encode(canvas).latent_dist.mode())
            out["reference"] = torch.cat([latent, torch.zeros_like(latent)], dim=1)
            generator = torch.Generator("cpu").manual_seed(noise_seed(int(config.seed), 0xFFFFFFFF))
            out["reference_noise"] = torch.randn(latent.shape, generator=generator).to(device)
            log.info("%s: %s is the reference image", self.title, config.reference)
        return out

    def _gray(self, pipe: Any, conditions: dict[str, Any], held: int, like: torch.Tensor) -> torch.Tensor:
        """The latents of `held` latent frames of a gray clip (a masked-out video's), made once per size."""
        import torch

        key = (held, *like.shape[-2:])
        if key not in conditions["gray"]:
            frames = (held - 1) * self.temporal + 1
            gray = torch.zeros(1, 3, frames, like.shape[-2] * pipe.vae_scale_factor_spatial,
                               like.shape[-1] * pipe.vae_scale_factor_spatial, dtype=pipe.vae.dtype, device=like.device)
            conditions["gray"][key] = self.normalise(pipe, pipe.vae.encode(gray).latent_dist.mode()).to(torch.float32)
        return conditions["gray"][key]

    def context(self, pipe: Any, clean: torch.Tensor, hold: torch.Tensor | None,
                conditions: dict[str, Any]) -> torch.Tensor:  # fmt: skip
        """The window's `control_hidden_states`: context latents and mask, as `WanVACEPipeline` prepares them (with
        the overlap's mask 0 and the previous window's latents in place), the reference first."""
        import torch

        frames = clean.shape[2]
        z = clean.shape[1] - MASK_FOLD * MASK_FOLD * 4
        latents = clean[:, :z].clone()
        folded = clean[0, z:].reshape(MASK_FOLD * MASK_FOLD, 4, frames, *clean.shape[-2:])
        folded = folded.permute(0, 2, 1, 3, 4).reshape(MASK_FOLD * MASK_FOLD, frames * 4, *clean.shape[-2:])[:, 3:]
        # the pipeline's pick over the window's 4k+1 frames: nearest in time to each latent frame
        mask = torch.nn.functional.interpolate(folded.unsqueeze(0), size=(frames, *clean.shape[-2:]),
                                               mode="nearest-exact")  # fmt: skip
        if hold is not None:
            held = hold.shape[2]
            latents[:, : z // 2, :held] = hold
            latents[:, z // 2 :, :held] = self._gray(pipe, conditions, held, clean)
            mask[:, :, :held] = 0
        if conditions["reference"] is not None:
            reference = conditions["reference"]
            latents = torch.cat([reference, latents], dim=2)
            mask = torch.cat([torch.zeros_like(mask[:, :, :1]), mask], dim=2)
        return torch.cat([latents, mask], dim=1).to(pipe.transformer.dtype)

    def denoise(
        self, pipe: Any, clean: torch.Tensor, noise: torch.Tensor, embeds: tuple[Any, Any], *, steps: int,
        strength: float, guidance: float, hold: torch.Tensor | None, conditions: Any = None,
    ) -> torch.Tensor:
        """`WanVACEPipeline.__call__`'s steps 4 and 6: all the steps from the noise, the context as conditions."""
        import torch

        scheduler = pipe.scheduler
        control = self.context(pipe, clean, hold, conditions)
        references = 0
        if conditions["reference"] is not None:
            references = conditions["reference"].shape[2]
            noise = torch.cat([conditions["reference_noise"], noise], dim=2)
        scheduler.set_timesteps(steps, device=clean.device)
        boundary = pipe.config.boundary_ratio
        boundary = None if boundary is None else boundary * scheduler.config.num_train_timesteps
        positive, negative = embeds
        latents = noise
        for t in scheduler.timesteps:
            model = pipe.transformer if boundary is None or t >= boundary else pipe.transformer_2
            model_input = latents.to(model.dtype)
            timestep = t.expand(latents.shape[0])
            common = {"hidden_states": model_input, "timestep": timestep, "control_hidden_states": control,
                      "control_hidden_states_scale": conditions["scale"], "attention_kwargs": None,
                      "return_dict": False}  # fmt: skip
            with model.cache_context("cond"):
                prediction = model(encoder_hidden_states=positive, **common)[0]
            if negative is not None:
                with model.cache_context("uncond"):
                    unconditional = model(encoder_hidden_states=negative, **common)[0]
                prediction = unconditional + guidance * (prediction - unconditional)
            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
        return latents[:, :, references:]


def fold_mask(mask: torch.Tensor) -> torch.Tensor:
    """(n, H, W) mask frames to (64, n, H/8, W/8): each latent pixel's 8x8 mask pixels as channels, as
    `WanVACEPipeline.prepare_masks` folds them."""
    frames, height, width = mask.shape
    folded = mask.view(frames, height // MASK_FOLD, MASK_FOLD, width // MASK_FOLD, MASK_FOLD)
    return folded.permute(2, 4, 0, 1, 3).flatten(0, 1)


def load_reference(path: str) -> Any:
    """The reference image as RGB (PIL), or one line saying why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"reference image {path} not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"reference image {path} cannot be read: {exc}") from None


register(WanVace())
