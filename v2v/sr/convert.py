"""Map an ncnn super-resolution graph onto a PyTorch architecture's state dict, in the key layout spandrel detects.

Two graph shapes are recognised, the ones Real-ESRGAN's ncnn models use:

- **SRVGGNetCompact** (realesr-animevideov3): ``(Convolution, PReLU) * n, Convolution, PixelShuffle``, plus a
  nearest-neighbour upsampled copy of the input added at the end. Keys ``body.{i}.weight/bias``.
- **RRDBNet** (realesrgan-x4plus, -x4plus-anime): ``conv_first``, ``body.{b}.rdb{1,2,3}.conv{1..5}``,
  ``conv_body``, ``conv_up{k}`` after nearest x2 upsampling, ``conv_hr`` and ``conv_last``.

A graph may end with a resize of the network's output (realesr-animevideov3-x2 and -x3 are the x4 network
followed by a bicubic resize by 0.5 and 0.75); it is returned as `Imported.resize` so the caller can do the same.
The graph is checked layer by layer against the architecture; anything else is a ModelError that says what
was expected, never a silently wrong model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from v2v.errors import ModelError
from v2v.sr.ncnn import Layer, NcnnModel

# ncnn Interp resize types
INTERP_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}
LEAKY = 2  # ncnn's activation_type for leaky ReLU


@dataclasses.dataclass(frozen=True)
class Imported:
    """An architecture's state dict (float32 numpy arrays) and the resize the graph applies after the network.

    `resize` is the factor of that resize (e.g. 0.5), or None when the graph ends with the network.
    """

    architecture: str
    state_dict: dict[str, np.ndarray]
    resize: float | None = None
    resize_mode: str = "bicubic"


def _core(model: NcnnModel) -> list[Layer]:
    """The layers that compute (the Input and Split bookkeeping left out)."""
    return [layer for layer in model.layers if layer.type not in ("Input", "Split")]


def _conv(model: NcnnModel, layer: Layer, activation: int = 0, what: str = "") -> dict[str, np.ndarray]:
    """A 3x3 stride-1 'same' convolution's weight (out, in, 3, 3) and bias (out,), checked against ncnn's params."""
    out = int(layer.param(0, 0))  # type: ignore[arg-type]
    kernel = int(layer.param(1, 0))  # type: ignore[arg-type]
    shape = (
        kernel, layer.param(11, kernel), layer.param(2, 1), layer.param(3, 1), layer.param(4, 0),
        layer.param(14, layer.param(4, 0)), layer.param(5, 0),
    )  # fmt: skip
    if shape != (3, 3, 1, 1, 1, 1, 1):
        raise ModelError(f"ncnn layer {layer.name} ({what}) is not a 3x3 'same' convolution with bias")
    act = int(layer.param(9, 0))  # type: ignore[arg-type]
    slope = layer.param(10, [])
    if act != activation or (act == LEAKY and not np.allclose(slope, [0.2])):
        raise ModelError(f"ncnn layer {layer.name} ({what}) has activation {act} {slope}, expected {activation}")
    weight, bias = model.weights[layer.name]
    return {"weight": weight.reshape(out, -1, 3, 3), "bias": bias}


def _take_resize(core: list[Layer]) -> tuple[list[Layer], float | None, str]:
    """Split off a trailing Interp that resizes the network's output by a scale factor."""
    last = core[-1]
    if last.type != "Interp":
        return core, None, "bicubic"
    mode = INTERP_MODES.get(int(last.param(0, 0)))  # type: ignore[arg-type]
    height, width = float(last.param(1, 1.0)), float(last.param(2, 1.0))  # type: ignore[arg-type]
    if mode is None or height != width or last.param(3, 0) or last.param(4, 0) or last.param(6, 0):
        raise ModelError(f"ncnn layer {last.name}: only a square scale-factor resize can end the graph")
    return core[:-1], height, mode


def _expect(types: list[str], expected: list[str], architecture: str) -> None:
    if types != expected:
        first = next((i for i, (a, b) in enumerate(zip(types, expected, strict=False)) if a != b), None)
        where = f"layer {first}: {types[first]} where {expected[first]} was expected" if first is not None else (
            f"{len(types)} layers where {len(expected)} were expected"
        )
        raise ModelError(f"the ncnn graph is not a {architecture} ({where})")


def _nearest_upsample(layer: Layer, factor: int) -> bool:
    return (
        layer.type == "Interp"
        and layer.param(0, 0) == 1
        and float(layer.param(1, 1.0)) == factor  # type: ignore[arg-type]
        and float(layer.param(2, 1.0)) == factor  # type: ignore[arg-type]
    )


def import_compact(model: NcnnModel) -> Imported:
    """SRVGGNetCompact from its ncnn graph (see the module docstring)."""
    core, resize, mode = _take_resize(_core(model))
    blocks = sum(layer.type == "PReLU" for layer in core)
    _expect(
        [layer.type for layer in core],
        ["Convolution", "PReLU"] * blocks + ["Convolution", "PixelShuffle", "Interp", "BinaryOp"],
        "SRVGGNetCompact",
    )
    factor = int(core[-3].param(0, 1))  # type: ignore[arg-type]
    if not _nearest_upsample(core[-2], factor) or core[-1].param(0, 0) != 0:
        raise ModelError("the ncnn graph is not a SRVGGNetCompact (its skip is not a nearest upsample added back)")
    state: dict[str, np.ndarray] = {}
    for index, layer in enumerate(core[:-3]):
        if layer.type == "Convolution":
            for key, value in _conv(model, layer, what=f"body.{index}").items():
                state[f"body.{index}.{key}"] = value
        else:
            (slope,) = model.weights[layer.name]
            features = state[f"body.{index - 1}.bias"].shape[0]
            state[f"body.{index}.weight"] = np.broadcast_to(slope, (features,)).copy()
    last = state[f"body.{len(core) - 4}.bias"].shape[0]
    if last != 3 * factor * factor:
        raise ModelError(f"the ncnn graph's last convolution has {last} channels; pixel shuffle x{factor} needs "
                         f"{3 * factor * factor}")
    return Imported("SRVGGNetCompact", state, resize, mode)


def import_rrdb(model: NcnnModel) -> Imported:
    """RRDBNet (ESRGAN / Real-ESRGAN) from its ncnn graph (see the module docstring)."""
    core, resize, mode = _take_resize(_core(model))
    types = [layer.type for layer in core]
    dense = ["Convolution", "Concat"] * 4 + ["Convolution", "Eltwise"]
    blocks = types.count("Eltwise") // 4
    upsamples = sum(_nearest_upsample(layer, 2) for layer in core)
    expected = (
        ["Convolution"]
        + (dense * 3 + ["Eltwise"]) * blocks
        + ["Convolution", "BinaryOp"]
        + ["Interp", "Convolution"] * upsamples
        + ["Convolution", "Convolution"]
    )
    _expect(types, expected, "RRDBNet")
    convs = iter([layer for layer in core if layer.type == "Convolution"])
    state: dict[str, np.ndarray] = {}

    def put(name: str, activation: int = 0) -> None:
        for key, value in _conv(model, next(convs), activation, name).items():
            state[f"{name}.{key}"] = value

    put("conv_first")
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for index in range(1, 6):
                put(f"body.{block}.rdb{rdb}.conv{index}", LEAKY if index < 5 else 0)
    put("conv_body")
    for index in range(1, upsamples + 1):
        put(f"conv_up{index}", LEAKY)
    put("conv_hr", LEAKY)
    put("conv_last")
    for layer in (layer for layer in core if layer.type == "Eltwise"):
        if layer.param(0, 1) != 1 or not np.allclose(layer.param(1, []), [0.2, 1.0]):
            raise ModelError(f"ncnn layer {layer.name}: RRDBNet's residuals are 0.2 * block + input")
    if state["conv_first.weight"].shape[1] != 3:
        raise ModelError("the ncnn RRDBNet takes more than 3 input channels (pixel-unshuffle), not supported")
    return Imported("RRDBNet", state, resize, mode)


def import_ncnn(model: NcnnModel) -> Imported:
    """The architecture and state dict of an ncnn Real-ESRGAN graph; ModelError lists what was tried."""
    errors = []
    for importer in (import_compact, import_rrdb):
        try:
            return importer(model)
        except ModelError as error:
            errors.append(str(error))
    raise ModelError("unsupported ncnn graph; tried " + "; ".join(errors))


def resize_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """Output size of ncnn's Interp by a scale factor: each side times the factor, truncated."""
    return max(1, math.floor(height * factor)), max(1, math.floor(width * factor))
