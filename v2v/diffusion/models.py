"""Loading diffusion pipelines, ControlNets, IP-Adapters, LoRAs and schedulers, offline, for any family.

The family (`registry.Family`) says which classes and defaults to use; the code here does the loading every
family shares.

A model is named by a local diffusers folder, a single-file checkpoint (`.safetensors`/`.ckpt`), or a
Hugging Face hub id that is already in the local cache (`~/.cache/huggingface/hub`, or `HF_HUB_CACHE`).
Nothing is ever downloaded: a model that is not on disk raises a one-line `ModelError` naming what was
looked for and the `hf download …` command that fetches it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v2v.errors import ModelError, require

if TYPE_CHECKING:
    import torch

    from v2v.diffusion.registry import Family, ModelInfo

log = logging.getLogger(__name__)

# --scheduler names -> diffusers classes, and extra config each needs
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    # few-step schedulers for LCM(-LoRA) and Turbo-style models: use 2-8 steps and guidance 1-2
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "turbo": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
}


def _download_hint(repo: str, files: str = "") -> str:
    return f"get it with `hf download {repo}{' ' + files if files else ''}` (huggingface-cli download on older hubs)"


def resolve_path(name: str | os.PathLike[str], what: str, files_hint: str = "", instead: str = "pass a path") -> Path:
    """A local path for `name`: itself if it exists, else the cached snapshot of a hub id.

    `name` may be `org/repo` or `org/repo/path/inside/the/repo`. Raises ModelError (one line, naming
    `what` was looked for and how to get it) when neither is on disk.
    """
    path = Path(os.path.expanduser(os.fspath(name)))
    if path.exists():
        return path
    text = os.fspath(name)
    parts = Path(text).parts
    if len(parts) >= 2 and not text.startswith(("/", ".", "~")):  # org/repo[/path]: look in the hub cache
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        repo, inside = "/".join(parts[:2]), Path(*parts[2:]) if len(parts) > 2 else Path()
        try:
            snapshot = Path(snapshot_download(repo, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            snapshot = None
        if snapshot is not None and (snapshot / inside).exists():
            return snapshot / inside
        hint = _download_hint(repo, files_hint or (inside.as_posix() if inside.parts else ""))
        raise ModelError(
            f"{what} {text!r} is neither a local path nor in the Hugging Face cache (offline); {hint}, or {instead}"
        )
    raise ModelError(f"{what} {text!r} not found; pass an existing folder or file, or a hub id that is in the cache")


def _dtype_argument(dtype: torch.dtype) -> dict[str, Any]:
    """diffusers renamed `torch_dtype` to `dtype` in 0.42 (and warns about the old name there)."""
    import diffusers

    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (0, 42) else {"torch_dtype": dtype}


def load_controlnet(family: Family, name: str, dtype: torch.dtype, model: str) -> Any:
    """A ControlNet of `family` from a diffusers folder, a single file, or a cached hub id. Its config's class
    is checked first, so a ControlNet of another family is refused before anything big is loaded."""
    require("diffusers", "diffusion")
    import diffusers

    from v2v.diffusion.registry import controlnet_families

    path = resolve_path(name, "ControlNet")
    config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not config.exists():
        if path.is_file():  # diffusers would fetch a config from the hub when none is at hand; we never download
            raise ModelError(
                f"single-file ControlNet {name!r} needs its diffusers config.json beside it (e.g. from "
                "lllyasviel/control_v11p_sd15_canny), or pass the ControlNet's diffusers folder"
            )
        raise ModelError(f"ControlNet {name!r} is a folder without config.json; pass a diffusers ControlNet folder")
    class_name = str(json.loads(config.read_text()).get("_class_name", ""))
    if class_name not in family.controlnet_classes:
        owners = " or ".join(f.title for f in controlnet_families(class_name))
        made_for = f"a {owners} ControlNet" if owners else f"a {class_name or 'model of unknown class'}"
        raise ModelError(
            f"ControlNet {name!r} is {made_for}, but base model {model!r} is {family.title}; pass a ControlNet made "
            f"for {family.title}"
        )
    cls = getattr(diffusers, class_name)
    try:
        if path.is_file():
            return cls.from_single_file(
                str(path), config=str(path.parent), local_files_only=True, **_dtype_argument(dtype)
            )
        return cls.from_pretrained(str(path), local_files_only=True, **_dtype_argument(dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load ControlNet {name!r}: {_first_line(exc)}") from exc


def check_controlnet_fits(controlnet: Any, unet: Any, name: str, model: str, keys: tuple[str, ...]) -> None:
    """Raise ModelError when `controlnet` was made for another base model than `unet` (configs differ in `keys`)."""
    for key in keys:
        theirs, ours = controlnet.config.get(key), unet.config.get(key)
        if key == "block_out_channels":  # a ControlNet mirrors the UNet's down path
            theirs, ours = list(theirs or []), list(ours or [])
        if theirs != ours:
            raise ModelError(
                f"ControlNet {name!r} does not fit base model {model!r}: {key} is {theirs} there and {ours} in the "
                "base UNet (an SD 1.5 ControlNet needs an SD 1.5 base, an SDXL one an SDXL base)"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_pipeline(
    family: Family,
    info: ModelInfo,
    kind: str,
    controlnets: list[Any],
    *,
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    model_config: str | None = None,
) -> Any:
    """The diffusers pipeline `family.pipelines[kind]` for the model `info` describes, on `device`.

    A diffusers folder (or cached hub id) loads with `from_pretrained`; a single-file checkpoint with
    `from_single_file`, its diffusers configs from `model_config` (a folder or cached hub id) or else the
    family's configs from the Hugging Face cache: diffusers would fetch them from the hub, we never download.
    """
    require("diffusers", "diffusion")
    require("transformers", "diffusion")
    import diffusers

    cls = getattr(diffusers, family.pipelines[kind])
    extra: dict[str, Any] = (
        {"controlnet": controlnets if len(controlnets) > 1 else controlnets[0]} if controlnets else {}
    )
    path = info.path
    try:
        if info.is_file:
            config = resolve_path(
                model_config or family.single_file_configs(info),
                "diffusers configs for the single-file checkpoint",
                "--include '*.json' '*.txt'",
                "pass --model-config FOLDER (a diffusers folder of the same architecture)",
            )
            pipe = cls.from_single_file(
                str(path), config=str(config), local_files_only=True, **extra, **_dtype_argument(dtype)
            )
            family.adjust_single_file(pipe, info, model_config)
        else:
            if "safety_checker" in info.index:  # SD 1.x folders list one; v2v never runs it
                extra["safety_checker"] = None
            pipe = cls.from_pretrained(str(path), local_files_only=True, **extra, **_dtype_argument(dtype))
    except ModelError:
        raise
    except Exception as exc:  # diffusers raises many kinds here (SingleFileComponentError is a bare Exception)
        single = info.is_file and not model_config
        hint = " (pass --model-config with a diffusers folder of the same architecture)" if single else ""
        raise ModelError(f"cannot load base model {model!r}: {_first_line(exc)}{hint}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def set_scheduler(pipe: Any, name: str) -> None:
    """Replace the pipeline's scheduler by one of SCHEDULERS, keeping its training configuration."""
    import diffusers

    if name not in SCHEDULERS:
        raise ModelError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    class_name, extra = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)


def load_lora(pipe: Any, name: str, scale: float) -> None:
    """Load a LoRA (diffusers or kohya layout, a file or a folder) and fuse it at `scale`."""
    require("peft", "diffusion")
    path = resolve_path(name, "LoRA")
    try:
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="v2v")
        else:
            pipe.load_lora_weights(str(path), adapter_name="v2v", local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load LoRA {name!r}: {_first_line(exc)}") from exc
    pipe.set_adapters(["v2v"], adapter_weights=[scale])
    pipe.fuse_lora(adapter_names=["v2v"], lora_scale=1.0)
    pipe.unload_lora_weights()


def _ip_adapter_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin") and "ip-adapter" in p.name)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelError(
            f"IP-Adapter folder {path} holds {len(found)} ip-adapter weight files ({names}); pass one file"
        )
    return found[0]


def find_image_encoder(weights: Path, image_encoder: str | None) -> Path:
    """The CLIP image encoder folder: `image_encoder`, or `image_encoder/` beside or above the weights."""
    if image_encoder:
        return resolve_path(image_encoder, "IP-Adapter image encoder")
    candidates = [weights.parent / "image_encoder", weights.parent.parent / "image_encoder"]
    candidates.append(weights.parent / "models" / "image_encoder")
    for candidate in candidates:
        if (candidate / "config.json").exists():
            return candidate
    raise ModelError(
        f"IP-Adapter {weights.name} has no image encoder (looked in {', '.join(map(str, candidates))}); pass "
        "--image-encoder FOLDER (h94/IP-Adapter ships it as models/image_encoder, and sdxl_models/image_encoder)"
    )


def ip_adapter_width(weights: Path) -> int | None:
    """The text width (cross-attention dim) an IP-Adapter file was made for: the input width of its first
    `to_k_ip` projection; None when the layout is not the original IP-Adapter one."""
    from v2v.diffusion.registry import read_tensor_shapes

    shapes = read_tensor_shapes(weights)
    suffixes = ("to_k_ip.weight", "ip_adapter_double_stream_k_proj.weight")  # diffusers/original, XLabs (FLUX)
    widths = [shape[-1] for key, shape in sorted(shapes.items()) if key.endswith(suffixes) and len(shape) == 2]
    return widths[0] if widths else None


def load_ip_adapter(family: Family, pipe: Any, name: str | None, image_encoder: str | None, scale: float) -> None:
    """Load an IP-Adapter (the family's default when `name` is None) and its CLIP image encoder into `pipe`,
    at `scale`. ModelError when it was made for another base (its width differs from the UNet's text width)."""
    from transformers import CLIPVisionModelWithProjection

    assert family.ip_adapter is not None
    default = family.ip_adapter
    weights = _ip_adapter_file(resolve_path(name or default.weights, "IP-Adapter", default.files_hint))
    width, ours = ip_adapter_width(weights), family.text_width(pipe)
    if width is not None and ours is not None and width != ours:
        raise ModelError(
            f"IP-Adapter {weights.name} was made for a base with text width {width}, but base model is {family.title} "
            f"with {ours}; pass one made for {family.title} (default {default.weights})"
        )
    encoder_path = find_image_encoder(weights, image_encoder)
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_path), dtype=pipe.dtype)
        pipe.register_modules(image_encoder=encoder.to(pipe.device))
        pipe.load_ip_adapter(str(weights.parent), subfolder="", weight_name=weights.name, image_encoder_folder=None)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load IP-Adapter {weights}: {_first_line(exc)}") from exc
    pipe.set_ip_adapter_scale(scale)
