"""Super-resolution models: the named models of the registry's "sr" task, imported from ncnn files, and any
checkpoint spandrel knows.

Every model reaches PyTorch the same way, through spandrel's `ModelLoader`: a named model (declared in
`v2v/restore/families/`: Real-ESRGAN, Real-CUGAN, SPAN) is first converted from the ncnn files its package
installs into a safetensors file in the user cache folder (`$V2V_CACHE`, else `~/.cache/v2v`), and that file is
then loaded like a user's own checkpoint. Nothing is ever downloaded.

What a state dict cannot hold travels in the safetensors metadata: a resize after the network
(realesr-animevideov3-x2 is the x4 network, then a bicubic resize by 0.5: `v2v.resize`, `v2v.resize_mode`), and
SPAN's input normalisation (`v2v.span.mean`, `v2v.span.range`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from v2v.errors import ModelError, UsageError, require

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

    from v2v.restore.registry import ModelTraits, RestoreModel

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
FORMAT_VERSION = "2"  # bump when the conversion changes, so old cache files are rebuilt
SR_TASKS = ("sr",)
DEFAULT_PRE_PAD = 10  # reflected border around the frame (Real-ESRGAN's and its ncnn build's)
SELF_PADDING = {"RealCUGAN": 0}  # architectures that reflect-pad inside their forward, like their ncnn builds


@dataclasses.dataclass
class SRModel:
    """A loaded super-resolution model: spandrel's descriptor plus the resize its graph does after the network.

    `net_scale` is the network's own integer factor; `scale` the model's overall factor (`net_scale * resize`).
    `pre_pad` is the reflected border the upscaler adds around a frame (0 for networks that pad themselves).
    """

    descriptor: ImageModelDescriptor
    name: str
    resize: float | None = None
    resize_mode: str = "bicubic"
    pre_pad: int = DEFAULT_PRE_PAD

    @property
    def net_scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def scale(self) -> float:
        return self.net_scale * (self.resize or 1.0)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.id)

    @property
    def traits(self) -> ModelTraits:
        """What spandrel's descriptor says the network supports, in the form every restoration network has."""
        from v2v.restore.registry import ModelTraits

        descriptor = self.descriptor
        return ModelTraits(
            f"{self.name} ({self.architecture})", self.scale, max(1, descriptor.size_requirements.multiple_of),
            descriptor.supports_half, descriptor.supports_bfloat16,
        )  # fmt: skip


def cache_dir() -> Path:
    """Where converted models are kept: `$V2V_CACHE/models`, else `~/.cache/v2v/models`."""
    root = os.environ.get("V2V_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "v2v")
    return Path(root) / "models"


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def convert_ncnn(param: Path, weights: Path, output: Path, fingerprint: str = "") -> Path:
    """Convert an ncnn SR model (see `v2v.restore.ncnn_import`) to a safetensors file that spandrel loads
    (atomically)."""
    torch = require("torch", "torch")
    safetensors_torch = require("safetensors.torch", "torch")
    from v2v.restore.ncnn import load_ncnn
    from v2v.restore.ncnn_import import import_ncnn

    imported = import_ncnn(load_ncnn(param, weights))
    tensors = {key: torch.from_numpy(value).contiguous() for key, value in imported.state_dict.items()}
    metadata = {"v2v.format": FORMAT_VERSION, "v2v.source": str(param), "v2v.fingerprint": fingerprint}
    if imported.resize is not None:
        metadata.update({"v2v.resize": repr(imported.resize), "v2v.resize_mode": imported.resize_mode})
    metadata.update({f"v2v.{key}": value for key, value in imported.extra.items()})
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


def named_model(name: str, scale: float | None = None) -> RestoreModel | None:
    """The registered SR model a name means, or None when nothing is called that (a path, or a typo).

    With a whole-number `scale`, a name without one is completed the way Real-ESRGAN's and Video2X's `-n NAME
    -s S` are: `realesr-animevideov3` at scale 2 is realesr-animevideov3-x2, `realcugan-se-conservative` at
    scale 3 is realcugan-se-x3-conservative.
    """
    from v2v.restore import registry

    if scale is not None and math.isfinite(scale) and scale == int(scale):
        parts = name.split("-")
        for cut in range(len(parts), 0, -1):  # "-xS" at the end first, then earlier
            candidate = "-".join([*parts[:cut], f"x{int(scale)}", *parts[cut:]])
            if registry.is_named(candidate):
                found = registry.lookup(candidate)
                if found.task in SR_TASKS and found.scale == int(scale):
                    return found
    if registry.is_named(name):
        return registry.lookup(name, SR_TASKS)  # a video model here says so
    return None


def named_model_path(model: RestoreModel | str) -> Path:
    """The cached safetensors file of a named model, converted from its ncnn files if missing or stale.

    MissingDependencyError (with the install command) when the package that ships its files is not installed.
    """
    from v2v.restore import registry

    if isinstance(model, str):
        model = registry.lookup(model, SR_TASKS)
    param, weights = model.weight_paths()
    fingerprint = _fingerprint(param, weights)
    path = cache_dir() / f"{model.name}.safetensors"
    if path.is_file() and _metadata(path).get("v2v.fingerprint") == fingerprint:
        return path
    return convert_ncnn(param, weights, path, fingerprint)


def describe(model: RestoreModel) -> str:
    """Whether a named SR model can be used here, for `v2v models`."""
    status = model.status()
    if status != "available":
        return status
    cached = cache_dir() / f"{model.name}.safetensors"
    return "available (cached)" if cached.is_file() else "available (converted on first use)"


def load_named(model: RestoreModel, device: str | torch.device | None = None) -> SRModel:
    """A named model from the registry (its `loader`), converted on first use and loaded through spandrel."""
    return _load_checkpoint(named_model_path(model), model.name, device, require("spandrel", "torch"))


def _architecture_ids() -> list[str]:
    from spandrel import MAIN_REGISTRY

    return [str(support.architecture.id) for support in MAIN_REGISTRY.architectures()]


def load_file(path: str | os.PathLike[str], device: str | torch.device | None = None) -> SRModel:
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


def _load_checkpoint(path: Path, name: str, device: str | torch.device | None, spandrel: object) -> SRModel:
    from v2v.devices import resolve_device
    from v2v.restore.ncnn_import import IMPORTERS

    loader = spandrel.ModelLoader(device=resolve_device(device))  # type: ignore[attr-defined]
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
            f"{path}: no known architecture fits these weights (tried spandrel's {len(tried)}: {', '.join(tried)}; "
            f"and v2v's ncnn importers, for .param files: {', '.join(IMPORTERS)})"
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
    if "v2v.span.mean" in metadata:  # SPAN's normalisation, which spandrel cannot read from a state dict
        import torch

        mean = [float(value) for value in metadata["v2v.span.mean"].split(",")]
        descriptor.model.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        descriptor.model.img_range = float(metadata.get("v2v.span.range", "255"))
    resize = float(metadata["v2v.resize"]) if "v2v.resize" in metadata else None
    architecture = str(descriptor.architecture.id)
    return SRModel(
        descriptor.eval(), name, resize, metadata.get("v2v.resize_mode", "bicubic"),
        SELF_PADDING.get(architecture, DEFAULT_PRE_PAD),
    )  # fmt: skip


def load_model(
    model: str | os.PathLike[str] | RestoreModel, device: str | torch.device | None = None,
    scale: float | None = None,
) -> SRModel:
    """A named model (see `v2v models`; `scale` completes a name without one, see `named_model`) or a model file,
    loaded on `device` (None: `v2v.devices.resolve_device`). UsageError with "did you mean" for a name that is
    neither."""
    from v2v.restore import registry

    if isinstance(model, registry.RestoreModel):
        return load_named(model, device)
    text = os.fspath(model)
    named = named_model(text, scale)
    if named is not None:
        return load_named(named, device)
    if os.path.exists(text):
        return load_file(text, device)
    if text.lower().endswith((*CHECKPOINT_SUFFIXES, ".param")) or os.sep in text:
        raise ModelError(f"model file not found: {text}")
    try:
        registry.lookup(text, SR_TASKS)
    except UsageError as error:
        raise UsageError(f"{error} (or give a checkpoint file)") from None
    raise AssertionError("unreachable: lookup found a model named_model did not")  # pragma: no cover
