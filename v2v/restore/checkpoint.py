"""Reading a restoration checkpoint and loading it into one of v2v's own networks, strictly.

Strict means every tensor of the file is used, every parameter of the network is filled, and every shape
matches; anything else is one `ModelError` line naming what differs (the first few keys), so a checkpoint
of another architecture or size never loads half-way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from v2v.errors import ModelError

if TYPE_CHECKING:
    import torch

WRAPPERS = ("params_ema", "params", "state_dict", "model")  # BasicSR, KAIR and Lightning keep the tensors in one


def read_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a .pth checkpoint (unwrapped from BasicSR's `params`), on the CPU; ModelError otherwise."""
    import torch

    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except Exception as error:  # pickle, zip and torch errors all mean "not a checkpoint we can read"
        raise ModelError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    for key in WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    return dict(state)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def load_strict(network: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Fill `network` from `state` (not modified): ModelError unless keys and shapes match one to one."""
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    unused = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} != {tuple(value.shape)}" for key, value in expected.items()
             if key in state and tuple(state[key].shape) != tuple(value.shape)]  # fmt: skip
    problems = [f"{what}: {_few(keys)}" for what, keys in
                (("missing", missing), ("unused", unused), ("wrong shape", wrong)) if keys]  # fmt: skip
    if problems:
        raise ModelError(f"{source} does not fit {type(network).__name__}: {'; '.join(problems)}")
    network.load_state_dict(dict(state), strict=True)
