"""Read ncnn models: the `.param` graph (text) and the `.bin` weights (fp32, fp16 or 8-bit table storage).

Only what the importer needs is read: the layer list with its parameters, and for every layer that carries
weights, its arrays as float32 numpy in ncnn's own order (a convolution's weight is (out, in, kh, kw)
flattened, like PyTorch's). A layer type whose weights this reader does not know is an error, because
skipping it would misalign every array after it in the `.bin`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np

from v2v.errors import ModelError

MAGIC = 7767517

# Tags that open a weight array stored with "type 0" (ncnn's ModelBin::load with a storage flag).
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_RAW = 0x0002C056

# Layers without weights in the `.bin`.
WEIGHTLESS = frozenset(
    {
        "Input", "Split", "Concat", "Interp", "PixelShuffle", "BinaryOp", "Eltwise", "ReLU", "Sigmoid",
        "TanH", "Clip", "Crop", "Padding", "Noop", "Reshape", "Permute", "Flatten", "Dropout", "Slice",
        "Pooling", "Swish",
    }
)  # fmt: skip

ParamValue = int | float | list[int] | list[float]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One line of a `.param` file: type, name, input and output blob names, and `id=value` parameters."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]

    def param(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)


@dataclasses.dataclass(frozen=True)
class NcnnModel:
    """A parsed ncnn model: layers in file order, and float32 weight arrays by layer name."""

    layers: list[Layer]
    weights: dict[str, list[np.ndarray]]

    def of_type(self, *types: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.type in types]


def _value(text: str) -> int | float:
    # ncnn reads a value as float when it has a '.' or an exponent, else as int.
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str, source: str = "<param>") -> list[Layer]:
    """Parse the text of a `.param` file into layers; ModelError says which line is wrong."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise ModelError(f"{source} is not an ncnn .param file (its first line is not the magic {MAGIC})")
    layers = []
    for number, fields in enumerate(lines[2:], start=3):
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            inputs = tuple(fields[4 : 4 + n_in])
            outputs = tuple(fields[4 + n_in : 4 + n_in + n_out])
            params: dict[int, ParamValue] = {}
            for item in fields[4 + n_in + n_out :]:
                key_text, value_text = item.split("=", 1)
                key = int(key_text)
                if key <= -23300:  # an array: -23300-id=count,v1,v2,...
                    values = [_value(v) for v in value_text.split(",")[1:]]
                    params[-key - 23300] = values  # type: ignore[assignment]
                else:
                    params[key] = _value(value_text)
        except (ValueError, IndexError):
            raise ModelError(f"{source}: line {number} is not a valid ncnn layer: {' '.join(fields)!r}") from None
        if len(inputs) != n_in or len(outputs) != n_out:
            raise ModelError(f"{source}: line {number} names fewer blobs than it declares")
        layers.append(Layer(kind, name, inputs, outputs, params))
    return layers


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.offset, self.source = data, 0, source

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise ModelError(f"{self.source} ends early: the .param file needs more weights than the .bin holds")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def raw(self, count: int) -> np.ndarray:
        """`count` float32 values with no storage flag (ncnn's type 1)."""
        return np.frombuffer(self.take(4 * count), dtype="<f4").copy()

    def flagged(self, count: int) -> np.ndarray:
        """`count` values behind a 4-byte storage flag (ncnn's type 0): fp32, fp16 or an 8-bit table."""
        head = self.take(4)
        (tag,) = struct.unpack("<I", head)
        if tag == TAG_FP16:
            values = np.frombuffer(self.take(2 * count), dtype="<f2").astype(np.float32)
            self.take((-2 * count) % 4)  # arrays are aligned to 4 bytes
            return values
        if tag == TAG_INT8:
            raise ModelError(f"{self.source} stores int8-quantized weights, which v2v does not import")
        if tag == TAG_FP32_RAW or sum(head) == 0:
            return self.raw(count)
        # Any other non-zero flag: a 256-entry float table, then one byte per value.
        table = self.raw(256)
        indices = np.frombuffer(self.take(count), dtype=np.uint8)
        self.take((-count) % 4)
        return table[indices]


def read_weights(layers: list[Layer], data: bytes, source: str = "<bin>") -> dict[str, list[np.ndarray]]:
    """Read the `.bin` bytes for `layers` (in file order) into float32 arrays by layer name."""
    reader = _Reader(data, source)
    weights: dict[str, list[np.ndarray]] = {}
    for layer in layers:
        if layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
            # The same layout for all three: 0=outputs, 5=bias (1=bias for InnerProduct), 6 (2) = weight count.
            inner = layer.type == "InnerProduct"
            if layer.type != "Deconvolution" and layer.param(8, 0):
                raise ModelError(f"{source}: layer {layer.name} is int8-quantized, which v2v does not import")
            arrays = [reader.flagged(int(layer.param(2 if inner else 6, 0)))]  # type: ignore[arg-type]
            if layer.param(1 if inner else 5, 0):
                arrays.append(reader.raw(int(layer.param(0, 0))))  # type: ignore[arg-type]
            weights[layer.name] = arrays
        elif layer.type == "MemoryData":  # a constant blob, raw float32: 0=w 1=h 11=d 2=c (unused sides are 0)
            sides = [int(layer.param(key, 0)) for key in (0, 1, 11, 2)]  # type: ignore[arg-type]
            weights[layer.name] = [reader.raw(int(np.prod([side for side in sides if side])))]
        elif layer.type == "PReLU":
            weights[layer.name] = [reader.raw(int(layer.param(0, 1)))]  # type: ignore[arg-type]
        elif layer.type not in WEIGHTLESS:
            raise ModelError(f"{source}: ncnn layer type {layer.type} ({layer.name}) is not supported by the importer")
    if reader.offset != len(data):
        raise ModelError(f"{source} has {len(data) - reader.offset} bytes more than the .param file describes")
    return weights


def load_ncnn(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None) -> NcnnModel:
    """Load an ncnn model from its `.param` file and `.bin` file (default: the same name with `.bin`)."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    for path in (param_path, bin_path):
        if not path.is_file():
            raise ModelError(f"ncnn model file not found: {path}")
    layers = parse_param(param_path.read_text(encoding="utf-8", errors="replace"), str(param_path))
    return NcnnModel(layers, read_weights(layers, bin_path.read_bytes(), str(bin_path)))
