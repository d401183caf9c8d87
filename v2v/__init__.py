"""v2v: video-to-video editing in a frame-streaming pipeline.

The public API is imported lazily so that `v2v --version` stays instant (no PyAV, no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Frame": "v2v.frames",
    "Stage": "v2v.pipeline",
    "MapStage": "v2v.pipeline",
    "run": "v2v.pipeline",
    "RunReport": "v2v.pipeline",
    "open": "v2v.io.reader",
    "probe": "v2v.io.probe",
    "open_writer": "v2v.io.writer",
    "V2VError": "v2v.errors",
}
_ALIASES = {"open": "open_source"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'v2v' has no attribute {name!r}")
    return getattr(importlib.import_module(module), _ALIASES.get(name, name))
