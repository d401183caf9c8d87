"""What loading diffusion models shares, offline: where a model is on disk, LoRAs, schedulers, the IP-Adapter's
files and width, and the ControlNet fit check. A family's own loading (`registry.Family.load`, `load_controlnet`,
`load_ip_adapter`) is built from these; this module knows no family.

A model is named by a local diffusers folder, a single-file checkpoint (`.safetensors`/`.ckpt`), or a
Hugging Face hub id that is already in the local cache (`~/.cache/huggingface/hub`, or `HF_HUB_CACHE`).
Nothing is ever downloaded: a model that is not on disk raises a one-line `ModelError` naming what was
looked for and the `hf download …` command that fetches it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v2v.errors import ModelError, require

if TYPE_CHECKING:
    import torch

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


def resolve_path(name: str | os.PathLike[str], what: str, files_hint: str = "", instead: str = "pass a path") -> Path:
    """A local path for `name`: itself if it exists, else the cached snapshot of a hub id.

    `name` may be `org/repo` or `org/repo/path/inside/the/repo`. Raises ModelError (one line, naming
    `what` was looked for and how to get it) when neither is on disk. `files_hint` (the files to download) and
    `instead` are message templates that may name parameters (`V2VError.naming`).
    """
    name = stand_ins().get(os.fspath(name), name)
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
        files = " " + files_hint if files_hint else " {inside}" if inside.parts else ""
        raise ModelError.naming(
            "{what} {name!r} is neither a local path nor in the Hugging Face cache (offline); get it with `hf download "
            "{repo}" + files + "` (huggingface-cli download on older hubs), or " + instead,
            what=what, name=text, repo=repo, inside=inside.as_posix(),
        )
    raise ModelError(f"{what} {text!r} not found; pass an existing folder or file, or a hub id that is in the cache")


def dtype_argument(dtype: torch.dtype) -> dict[str, Any]:
    """diffusers renamed `torch_dtype` to `dtype` in 0.42 (and warns about the old name there)."""
    import diffusers

    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (0, 42) else {"torch_dtype": dtype}


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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
        raise ModelError(f"cannot load LoRA {name!r}: {first_line(exc)}") from exc
    pipe.set_adapters(["v2v"], adapter_weights=[scale])
    pipe.fuse_lora(adapter_names=["v2v"], lora_scale=1.0)
    pipe.unload_lora_weights()


def ip_adapter_file(path: Path) -> Path:
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
    raise ModelError.naming(
        "IP-Adapter {name} has no image encoder (looked in {looked}); pass {image_encoder} FOLDER (h94/IP-Adapter "
        "ships it as models/image_encoder, and sdxl_models/image_encoder)",
        name=weights.name, looked=", ".join(map(str, candidates)),
    )


def ip_adapter_width(weights: Path) -> int | None:
    """The text width (cross-attention dim) an IP-Adapter file was made for: the input width of its first
    `to_k_ip` projection; None when the layout is not the original IP-Adapter one."""
    from v2v.diffusion.checkpoints import read_tensor_shapes

    shapes = read_tensor_shapes(weights)
    suffixes = ("to_k_ip.weight", "ip_adapter_double_stream_k_proj.weight")  # diffusers/original, XLabs (FLUX)
    widths = [shape[-1] for key, shape in sorted(shapes.items()) if key.endswith(suffixes) and len(shape) == 2]
    return widths[0] if widths else None


def stand_ins() -> dict[str, str]:
    """The local models that stand in for model names, from the JSON file `V2V_MODEL_MAP` names ({"org/repo":
    "/path", …}): a mirror of hub models on disk, or the tiny models the README's examples run with in tests."""
    table = os.environ.get("V2V_MODEL_MAP")
    if not table:
        return {}
    try:
        return dict(json.loads(Path(table).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"V2V_MODEL_MAP {table!r} is not a readable JSON object of name -> path: {exc}") from exc
