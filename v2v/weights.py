"""Weight files shipped inside pip packages that v2v never imports (their code needs VapourSynth, TensorFlow or
numpy < 2): the package's folder is found with `importlib.util.find_spec`, and only its files are read."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from v2v.errors import MissingDependencyError, ModelError


def package_dir(module: str) -> Path | None:
    """The installed package `module`'s folder, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, file: str, install: str, what: str) -> Path:
    """The file `file` (relative to the package's folder) of the installed package `module`; a one-line
    MissingDependencyError naming `install` (the pip command) when the package or the file is not there."""
    folder = package_dir(module)
    if folder is None:
        raise MissingDependencyError(f"{what} needs weights from the {module} package, which is not installed; "
                                     f"install it with: {install}")
    path = folder / file
    if not path.is_file():
        raise ModelError(f"{module} is installed but lacks {path}; reinstall: {install}")
    return path


def has_package_file(module: str, file: str) -> bool:
    """Whether `package_file` would find it (for `v2v models` and defaults that depend on what is installed)."""
    folder = package_dir(module)
    return folder is not None and (folder / file).is_file()
