"""What loading diffusion models shares: where a model is on disk, schedulers, the IP-Adapter's
files and width, and the ControlNet fit check. A family's own loading (`registry.Family.load`, `load_controlnet`,
`load_ip_adapter`) is built from these; this module knows no family.

A model is named by a local diffusers folder, a single-file checkpoint (`.safetensors`/`.ckpt`), or a
Hugging Face hub id (`org/repo`, or `org/repo/path/inside`). `resolve_path` is the one resolver: a local path as
it is, else the local cache (`~/.cache/huggingface/hub`, or `HF_HUB_CACHE`), else a download of what the loader
reads (`hub.py`). Offline (`--offline`, `HF_HUB_OFFLINE=1`) a model not on disk raises a one-line `ModelError`
naming what was looked for and the `hf download …` command that fetches it; online, a hub that cannot be reached
does too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v2v.errors import ModelError

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


def resolve_path(
    name: str | os.PathLike[str],
    what: str,
    files_hint: str = "",
    instead: str = "pass a path",
    files: Sequence[str] | None = None,
) -> Path:
    """A local path for `name`: itself if it exists, else the cached snapshot of a hub id, else (unless offline) the
    snapshot downloaded now.

    `name` may be `org/repo` or `org/repo/path/inside/the/repo`. `files` narrows or adds to what a download fetches
    (`hub.wanted_files`). Raises ModelError (one line, naming `what` was looked for and how to get it) when it is
    not on disk and cannot be downloaded. `files_hint` (the files to download) and `instead` are message templates
    that may name parameters (`V2VError.naming`).
    """
    name = stand_ins().get(os.fspath(name), name)
    path = Path(os.path.expanduser(os.fspath(name)))
    if path.exists():
        return path
    text = os.fspath(name)
    parts = Path(text).parts
    if len(parts) >= 2 and not text.startswith(("/", ".", "~")):  # org/repo[/path]: the hub cache, else the hub
        from v2v.diffusion import hub

        repo, inside = "/".join(parts[:2]), "/".join(parts[2:])
        arguments = " " + files_hint if files_hint else " {inside}" if inside else ""
        hint = "get it with `hf download {repo}" + arguments + "` (huggingface-cli download on older hubs)"
        values = dict(what=what, name=text, repo=repo, inside=inside)
        snapshot = hub.cached(repo, inside, files)
        if snapshot is None and not hub.is_offline():
            snapshot = _download(repo, inside, files, hint, values)
        if snapshot is not None and (snapshot / inside).exists():
            return snapshot / inside
        raise ModelError.naming(
            "{what} {name!r} is neither a local path nor in the Hugging Face cache (offline); " + hint + ", or "
            + instead, **values,
        )  # fmt: skip
    raise ModelError(f"{what} {text!r} not found: no such file or folder (a Hugging Face hub id is org/repo[/path])")


def _download(repo: str, inside: str, files: Sequence[str] | None, hint: str, values: dict[str, str]) -> Path:
    """`hub.download`, its failures as one-line ModelErrors; `hint` says how to get it (a template over `values`)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from v2v.diffusion import hub

    what, endpoint = f"{values['what']} {values['name']!r}", constants.ENDPOINT
    try:
        return hub.download(repo, inside, files, what)
    except GatedRepoError:
        raise ModelError(f"{what} is gated on the Hugging Face hub: accept its terms at {endpoint}/{repo}, then log "
                         "in with `hf auth login`") from None  # fmt: skip
    except RepositoryNotFoundError:
        raise ModelError(f"{what} is neither a local path nor a model on the Hugging Face hub ({endpoint}; a private "
                         "one needs `hf auth login`)") from None  # fmt: skip
    except hub.MissingFiles as exc:
        raise ModelError(f"{what}: {exc}") from None
    except Exception as exc:  # no network, a proxy, the hub down: whatever the HTTP stack raises
        raise ModelError.naming(
            "cannot download {what} {name!r} from {endpoint} ({reason}); work offline (--offline, or HF_HUB_OFFLINE=1) "
            "to use the local cache only, or " + hint + " where the hub can be reached",
            endpoint=endpoint, reason=first_line(exc), **values,
        ) from exc  # fmt: skip


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


# where an IP-Adapter's image encoder lies, from the weights' folder (h94/IP-Adapter: models/image_encoder)
IMAGE_ENCODER_PLACES = ("image_encoder", "../image_encoder", "models/image_encoder")


def image_encoder_files(weights: str, image_encoder: str | None) -> list[str] | None:
    """What downloading IP-Adapter `weights` fetches beside them (`resolve_path`'s `files`): the image encoder, when
    `weights` names a file and `image_encoder` names no encoder (a folder is fetched whole)."""
    if image_encoder or not weights.endswith((".safetensors", ".bin")):
        return None
    return [f"{place}/*" for place in IMAGE_ENCODER_PLACES]


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
    candidates = [Path(os.path.normpath(weights.parent / place)) for place in IMAGE_ENCODER_PLACES]
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
