"""`RestyleConfig`: everything a restyle run needs, from Python, the command line or a recipe (TOML) file.

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
from typing import Any

from v2v.errors import InputError, UsageError


@dataclasses.dataclass
class RestyleConfig:
    """A restyle configuration. `controls[i]` makes the condition of `controlnets[i]` (a name of
    `control.CONTROLS` or a control video path); `control_scales` has one entry, or one per ControlNet."""

    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    controlnets: list[str] = dataclasses.field(default_factory=list)
    controls: list[str] = dataclasses.field(default_factory=list)
    control_scales: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    depth_model: str | None = None
    pose_model: str | None = None
    ip_adapter: str | None = None  # the reference image
    ip_adapter_model: str | None = None
    image_encoder: str | None = None
    ip_adapter_scale: float = 0.6
    lora: str | None = None
    lora_scale: float = 1.0
    scheduler: str | None = None
    strength: float = 0.5
    steps: int = 20
    guidance: float = 7.5
    seed: int = 0
    temporal: bool = True
    keyframe_every: int = 0  # 0 or 1: diffuse every frame
    fusion: float = 0.7  # weight of the flow-warped previous output where it is visible
    batch_size: int = 1
    max_side: int | None = None  # downscale frames whose longer side is larger, diffuse, scale back
    attention_slicing: bool = False
    vae_tiling: bool = False
    bank_tokens: int | None = None  # cap on the tokens kept per frame in the cross-frame attention bank
    model_config: str | None = None  # diffusers configs for a single-file checkpoint
    device: str | None = None
    dtype: str | None = None  # float16, bfloat16 or float32

    def check(self) -> RestyleConfig:
        """Raise UsageError for values that cannot work together; returns self."""
        if not self.model:
            raise UsageError("no base model: pass --model FOLDER_OR_FILE_OR_HUB_ID (or model = ... in the recipe)")
        if not 0.0 < self.strength <= 1.0:
            raise UsageError(f"strength must be in (0, 1], got {self.strength}")
        if self.steps < 1 or int(self.steps * self.strength) < 1:
            raise UsageError(f"steps x strength must give at least one step, got {self.steps} x {self.strength}")
        if self.controls and len(self.controls) != len(self.controlnets):
            raise UsageError(f"{len(self.controlnets)} ControlNet(s) but {len(self.controls)} --control: give one each")
        if len(self.control_scales) not in (1, len(self.controlnets) or 1):
            raise UsageError(f"give one --control-scale, or one per ControlNet ({len(self.controlnets)})")
        if self.batch_size < 1 or self.keyframe_every < 0:
            raise UsageError("batch size must be >= 1 and keyframe interval >= 0")
        if not 0.0 <= self.fusion < 1.0:
            raise UsageError(f"fusion must be in [0, 1), got {self.fusion}")
        return self

    @property
    def control_kinds(self) -> list[str]:
        """One control per ControlNet; canny by default."""
        return self.controls or ["canny"] * len(self.controlnets)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> RestyleConfig:
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
