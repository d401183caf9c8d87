"""Flow estimators by name: `make_flow_estimator("dis" | "raft" | "raft-small", ...)`, and `estimate_flow`
with one shared estimator per method. RAFT (torch, torchvision) is imported only when asked for."""

from __future__ import annotations

from typing import Any

import numpy as np

from v2v.errors import UsageError
from v2v.flow.estimators import DISFlow, FlowEstimator

FLOW_METHODS = ("dis", "raft", "raft-small")


def make_flow_estimator(method: str = "dis", **options: Any) -> FlowEstimator:
    """An estimator by name: "dis" (options: preset), "raft" / "raft-small" (options: weights, device,
    iterations, dtype)."""
    if method == "dis":
        return DISFlow(**options)
    if method in ("raft", "raft-small"):
        from v2v.flow.raft import RAFTFlow

        return RAFTFlow(variant="small" if method == "raft-small" else "large", **options)
    raise UsageError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")


_DEFAULT: dict[str, FlowEstimator] = {}


def estimate_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Flow from RGB uint8 image `a` to `b`, float32 (H, W, 2), with a shared default estimator of `method`."""
    if method not in _DEFAULT:
        _DEFAULT[method] = make_flow_estimator(method)
    return _DEFAULT[method](a, b)
