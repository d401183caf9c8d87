"""What a checkpoint file holds, read without loading its weights: tensor names and shapes from safetensors
headers, or from a pickled checkpoint opened memory-mapped on the meta device. Recognition (`registry.model_info`)
and the IP-Adapter's width check (`models.ip_adapter_width`) read files this way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from v2v.errors import ModelError


def read_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint file, without loading its weights into memory."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        shapes: dict[str, tuple[int, ...]] = {}
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[key] = tuple(handle.get_slice(key).get_shape())
        return shapes
    import torch

    try:
        state = torch.load(str(path), map_location="meta", weights_only=True, mmap=True)
    except Exception as exc:  # pickles raise many kinds
        raise ModelError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {key: tuple(value.shape) for key, value in _tensors(state)}


def _tensors(state: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(state, dict):
        for key, value in state.items():
            if hasattr(value, "shape"):
                yield str(key), value
