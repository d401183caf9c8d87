"""`RestyleConfig`, `EditConfig` and `RelightConfig`: everything a restyle, edit or relight run needs, from Python,
the command line or a recipe (TOML) file. Settings left at None (steps, guidance, strength, image guidance) take
the model family's defaults (`registry.Defaults`) when the stage is made (relighting: IC-Light's own).

A recipe holds the same names as the fields below (the CLI's options with `-` written `_`), e.g.

```toml
model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
prompt = "a watercolour painting, soft light"
controlnets = ["lllyasviel/control_v11p_sd15_canny"]
controls = ["canny"]
strength = 0.6
steps = 20
```
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from v2v.diffusion.registry import Defaults

from v2v.diffusion.loras import parse_loras
from v2v.errors import InputError, ParameterError, UsageError

Config = TypeVar("Config", bound="RestyleConfig")
CONTROL_NORMS = ("shot", "frame")  # how depth and Sobel soft-edge maps are rescaled (v2v.diffusion.control)
OFFLOADS = ("none", "model", "sequential")  # diffusers' CPU offload: none, enable_model_/enable_sequential_cpu_offload


@dataclasses.dataclass
class RestyleConfig:
    """A restyle configuration. `controls[i]` makes the condition of `controlnets[i]` (a name of
    `control.CONTROLS` or a control video path); `control_scales` has one entry, or one per ControlNet."""

    kind: ClassVar[str] = "restyle"  # the registry's edit kind (without "+controlnet")

    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    controlnets: list[str] = dataclasses.field(default_factory=list)
    controls: list[str] = dataclasses.field(default_factory=list)
    control_scales: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    control_modes: list[int] = dataclasses.field(default_factory=list)  # union ControlNets: mode of each (0 if none)
    control_norm: str = "shot"  # depth and Sobel soft-edge maps rescaled per "shot" or per "frame"
    depth_model: str | None = None
    pose_model: str | None = None
    ip_adapter: str | None = None  # the reference image
    ip_adapter_model: str | None = None
    image_encoder: str | None = None
    ip_adapter_scale: float = 0.6
    # InstantID (SDXL): the face photo, InstantX/InstantID's folder, the ArcFace ONNX model, and the scale of both
    # IdentityNet and the face adapter (`v2v.diffusion.instantid`)
    identity: str | None = None
    instantid: str | None = None
    face_encoder: str | None = None
    identity_scale: float = 0.8
    # LoRAs stacked and fused into the base, each `PATH[:WEIGHT]` (weight 1 when none: `loras.parse_lora`)
    lora: list[str] = dataclasses.field(default_factory=list)
    scheduler: str | None = None
    strength: float | None = None  # None: the family's default (0.5 for SD)
    steps: int | None = None  # None: the family's default (20 for SD)
    guidance: float | None = None  # None: the family's default (7.5 for SD 1.x/2.x, 5 for SDXL)
    true_cfg: float | None = None  # FLUX.1/Kontext: a second pass a step on the negative prompt, at this scale
    seed: int = 0
    temporal: bool = True
    keyframe_every: int = 0  # 0 or 1: diffuse every frame
    fusion: float = 0.7  # weight of the flow-warped previous output where it is visible
    # latent flow fusion (`latent_fusion.py`): weight of the flow-warped previous latents where trusted (0: off),
    # over this share of the denoising steps, from the first (defaults measured: BENCHMARKS.md, issue 15)
    latent_fusion: float = 0.5
    latent_fusion_steps: float = 0.75
    batch_size: int = 1
    max_side: int | None = None  # downscale frames whose longer side is larger, diffuse, scale back
    attention_slicing: bool = False
    vae_tiling: bool = False
    # frames above the family's working size are denoised in overlapping tiles (`tiles.py`): the tile's side in
    # pixels (None: the family's working size, `Defaults.tile`; 0: never tile) and the pixels neighbours share
    # (None: the family's share of the tile)
    tile: int | None = None
    tile_overlap: int | None = None
    # cap on the tokens kept per frame in the cross-frame attention bank (None: from the memory available)
    bank_tokens: int | None = None
    model_config: str | None = None  # diffusers configs for a single-file checkpoint
    # video families (`video_stage.VideoModelStage`): frames a window (None: the family's), frames of overlap, the
    # colour anchor's weight (0-1), a reference image (VACE); their `offload` "model" moves the text encoder off the
    # device once the prompt is encoded
    window: int | None = None
    window_overlap: int | None = None
    anchor: float = 1.0
    reference: str | None = None
    motion_adapter: str | None = None  # AnimateDiff: the MotionAdapter folder that animates an SD 1.5 base
    device: str | None = None  # None: `v2v.devices.resolve_device`'s choice (CUDA when there is one)
    dtype: str | None = None  # fp16/float16, bf16/bfloat16 or fp32/float32 (None: v2v.devices' default)
    # the weights' home between uses (`OFFLOADS`): "none" (all on the device), "model" (each model moves to the
    # device while it runs), "sequential" (each layer does); None: "none", or "model" when they do not fit
    offload: str | None = None
    compile: bool = False  # torch.compile the denoiser (UNet or transformer)

    @property
    def text(self) -> str:
        """What the text encoder reads: the prompt (the instruction for edits)."""
        return self.prompt

    def with_defaults(self: Config, defaults: Defaults) -> Config:
        """A copy with the settings left at None taken from a family's `defaults`."""
        names = ("steps", "guidance", "strength", "image_guidance")
        filled = {name: getattr(defaults, name) for name in names if getattr(self, name, 0) is None}
        return dataclasses.replace(self, **filled)

    def check(self: Config) -> Config:
        """Raise UsageError for values that cannot work together; returns self."""
        if not self.model:
            raise UsageError.naming(
                "no base model: pass {model} FOLDER_OR_FILE_OR_HUB_ID (or model = ... in the recipe)")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise UsageError(f"strength must be in (0, 1], got {self.strength}")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"steps must be >= 1, got {self.steps}")
        if self.kind == "restyle" and self.steps and self.strength and int(self.steps * self.strength) < 1:
            raise UsageError(f"steps x strength must give at least one step, got {self.steps} x {self.strength}")
        if self.true_cfg is not None and not self.true_cfg > 1.0:
            raise ParameterError("true_cfg", f"must be > 1 (at 1 the negative pass adds nothing), got {self.true_cfg}")
        if self.true_cfg is not None and not self.negative_prompt:
            raise UsageError.naming(
                "{true_cfg} does nothing without {negative_prompt} (its second pass reads that prompt)")
        if isinstance(self.lora, str):  # a recipe's `lora = "x.safetensors"`: one LoRA
            self.lora = [self.lora]
        parse_loras(self.lora)  # a weight that is not a number is refused before any model loads
        if self.identity or self.instantid or self.face_encoder:
            from v2v.diffusion.instantid import check_identity_options

            check_identity_options(self.identity, self.instantid, self.face_encoder, self.ip_adapter)
        if not 0.0 <= self.identity_scale < float("inf"):
            raise ParameterError("identity_scale", f"must be a finite number >= 0, got {self.identity_scale}")
        if self.bank_tokens is not None and self.bank_tokens < 1:
            raise UsageError(f"bank tokens must be >= 1, got {self.bank_tokens}")
        if self.tile is not None and self.tile < 0:
            raise ParameterError("tile", f"must be a side in pixels, or 0 for no tiles, got {self.tile}")
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise ParameterError("tile_overlap", f"must be >= 0 pixels, got {self.tile_overlap}")
        if self.controls and len(self.controls) != len(self.controlnets):
            raise UsageError.naming("{nets} ControlNet(s) but {given} {controls}: give one each",
                                     nets=len(self.controlnets), given=len(self.controls))
        if "inpaint" in self.controls and self.kind != "inpaint":
            raise UsageError.naming("{controls} inpaint (the frame with the mask's pixels at -1) is for v2v inpaint")
        if len(self.control_modes) > len(self.controlnets):
            raise UsageError.naming("{given} {control_modes} for {nets} ControlNet(s)", given=len(self.control_modes),
                                     nets=len(self.controlnets))
        if self.offload is not None and self.offload not in OFFLOADS:
            raise ParameterError("offload", f"must be none, model or sequential, got {self.offload!r}")
        if self.offload not in (None, "none"):
            from v2v.devices import resolve_device

            check_offload(self.offload, resolve_device(self.device))
        if self.control_norm not in CONTROL_NORMS:
            raise UsageError(f"control normalisation must be shot or frame, got {self.control_norm!r}")
        if len(self.control_scales) not in (1, len(self.controlnets) or 1):
            raise UsageError.naming("give one {control_scales}, or one per ControlNet ({nets})",
                                    nets=len(self.controlnets))
        if self.batch_size < 1 or self.keyframe_every < 0:
            raise UsageError("batch size must be >= 1 and keyframe interval >= 0")
        if not 0.0 <= self.fusion < 1.0:
            raise UsageError(f"fusion must be in [0, 1), got {self.fusion}")
        if not 0.0 <= self.latent_fusion <= 1.0:
            raise UsageError(f"latent fusion must be in [0, 1], got {self.latent_fusion}")
        if not 0.0 <= self.anchor <= 1.0:
            raise ParameterError("anchor", f"must be in [0, 1], got {self.anchor}")
        if not 0.0 < self.latent_fusion_steps <= 1.0:
            raise UsageError(f"latent fusion steps must be a share in (0, 1], got {self.latent_fusion_steps}")
        return self

    @property
    def control_kinds(self) -> list[str]:
        """One control per ControlNet; canny by default."""
        return self.controls or ["canny"] * len(self.controlnets)

    @classmethod
    def from_toml(cls: type[Config], path: str | os.PathLike[str], **overrides: Any) -> Config:
        """Read a recipe; `overrides` (not None) win over the file."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except FileNotFoundError:
            raise InputError(f"recipe {os.fspath(path)} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"recipe {os.fspath(path)} is not valid TOML: {exc}") from None
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(
                f"recipe {os.fspath(path)} has unknown keys {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclasses.dataclass
class EditConfig(RestyleConfig):
    """An instruction edit (`v2v edit`): `instruction` says what to change; the source frame is the image the
    editor sees. `image_guidance` (InstructPix2Pix) says how closely the result holds to the source."""

    kind: ClassVar[str] = "edit"

    instruction: str = ""
    image_guidance: float | None = None

    @property
    def text(self) -> str:
        return self.instruction

    def check(self: Config) -> Config:
        if not getattr(self, "instruction", ""):
            raise UsageError.naming(
                'no instruction: pass {instruction} "what to change" (or instruction = ... in a recipe)')
        return super().check()


def check_offload(offload: str | None, device: Any) -> None:
    """UsageError (one line) for `--offload model|sequential` where there is no CUDA device to offload to."""
    if offload in (None, "none") or device.type == "cuda":
        return
    import torch

    why = "torch sees no CUDA device here" if not torch.cuda.is_available() else f"the device is {device}"
    raise UsageError.naming("{offload} {asked} moves weights between CPU memory and a CUDA device, but {why}: drop "
                            "{offload}", asked=offload, why=why)  # fmt: skip


LIGHTS = ("none", "left", "right", "top", "bottom")
# IC-Light demo's sampling: 25 steps, guidance 2, and 0.9 of the way from the initial (light) image
RELIGHT_DEFAULTS = dict(steps=25, guidance=2.0, strength=0.9)


@dataclasses.dataclass
class RelightConfig(RestyleConfig):
    """A relight run: the base (SD 1.5), the IC-Light offsets, where the light comes from (or a background), and
    restyle's temporal settings. Settings left at None take IC-Light's demo values (`RELIGHT_DEFAULTS`), not the
    family's. `light_fusion`: weight of Light-A-Video's fusion of each step's relit estimate towards the flow-warped
    previous frame's (0: off; `estimate_fusion`)."""

    kind: ClassVar[str] = "restyle"  # the registry's kind: img2img with the widened UNet

    ic_light: str = ""
    light: str = "none"
    background: str | None = None
    background_length: str = "error"
    light_fusion: float = 0.0

    def with_defaults(self, defaults: Defaults) -> RelightConfig:
        from v2v.diffusion.registry import Defaults

        return super().with_defaults(Defaults(**RELIGHT_DEFAULTS))  # type: ignore[arg-type]

    def check(self) -> RelightConfig:
        super().check()
        if not self.ic_light:
            raise UsageError.naming("no IC-Light weights: pass {ic_light} FILE (iclight_sd15_fc.safetensors or "
                                    "iclight_sd15_fbc.safetensors)")
        if self.light not in LIGHTS:
            raise ParameterError("light", f"must be one of {', '.join(LIGHTS)}, got {self.light!r}")
        if self.background_length not in ("error", "hold"):
            raise ParameterError("background_length", f"must be error or hold, got {self.background_length!r}")
        if not 0.0 <= self.light_fusion <= 1.0:
            raise ParameterError("light_fusion", f"must be in [0, 1], got {self.light_fusion}")
        if self.controlnets or self.ip_adapter:
            raise UsageError.naming("relight takes no ControlNet or IP-Adapter; drop {controlnets}/{ip_adapter}")
        return self
