"""Weights shipped inside pip packages (MediaPipe's .tflite files, rembg's U2-Net-p, ...), found through the installed
package's folder (`importlib.util.find_spec`), never by importing the package: several of them pin or pull in
runtimes v2v does not use, so they are installed with `pip install --no-deps`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from v2v.errors import MissingDependencyError, ModelError

# MediaPipe's wheel (0.10.21 ships every .tflite v2v reads) pins numpy < 2: only its files are used
MEDIAPIPE_INSTALL = "pip install --no-deps 'mediapipe==0.10.21'"


def package_folder(module: str) -> Path | None:
    """The installed package's folder, found without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, relative: str, install: str, what: str) -> Path:
    """The file `relative` inside the package `module`; one line saying the pip command (`install`) that brings it
    when the package is missing, or that the file is not in the installed version."""
    folder = package_folder(module)
    if folder is None:
        raise MissingDependencyError(f"{what} needs weights from the {module} package, which is not installed; "
                                     f"install it with: {install}")
    path = folder / relative
    if not path.is_file():
        raise ModelError(f"{what}: {path} is not in the installed {module} package; install the version that ships "
                         f"it with: {install}")
    return path


def has_package_file(module: str, relative: str) -> bool:
    """Whether `package_file` would find it (for `v2v models`, and defaults that depend on what is installed)."""
    folder = package_folder(module)
    return folder is not None and (folder / relative).is_file()
