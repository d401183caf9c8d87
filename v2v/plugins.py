"""Discovery for the registries: a package's modules imported once, so that the ones declaring restoration
models (`v2v/restore/families/`) or diffusion families (`v2v/diffusion/families/`) register themselves."""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def import_all(package: str) -> tuple[str, ...]:
    """Import every module of `package` (a dotted name), once per process; their names, sorted."""
    found = importlib.import_module(package)
    names = tuple(sorted(info.name for info in pkgutil.iter_modules(found.__path__)))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
