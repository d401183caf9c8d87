"""Test helper: write SRVGGNetCompact / RRDBNet weights as ncnn .param/.bin files, the way Real-ESRGAN's ncnn
models are laid out, so the importer can be tested on models whose weights the test chose.

This is an independent writer of the ncnn format (not v2v code): storage "fp16" puts ncnn's fp16 tag before
each convolution weight, "fp32" a zero flag; biases and PReLU slopes are raw float32, as ncnn stores them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FP16_TAG = 0x01306B47


class Writer:
    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.lines: list[str] = []
        self.blobs: set[str] = set()
        self.data = bytearray()
        self.count = 0

    def layer(self, kind: str, inputs: list[str], outputs: list[str], params: str = "") -> None:
        self.count += 1
        name = f"{kind}_{self.count}"
        self.blobs.update(outputs)
        self.lines.append(f"{kind:<24} {name:<24} {len(inputs)} {len(outputs)} {' '.join(inputs + outputs)} {params}")

    def conv(self, source: str, target: str, weight: np.ndarray, bias: np.ndarray, leaky: bool = False) -> None:
        out = weight.shape[0]
        act = " 9=2 -23310=1,2.000000e-01" if leaky else ""
        self.layer("Convolution", [source], [target], f"0={out} 1=3 4=1 5=1 6={weight.size}{act}")
        flat = np.ascontiguousarray(weight, dtype=np.float32).ravel()
        if self.storage == "fp16":
            self.data += struct.pack("<I", FP16_TAG) + flat.astype("<f2").tobytes()
            self.data += b"\0" * ((-2 * flat.size) % 4)
        else:
            self.data += b"\0\0\0\0" + flat.astype("<f4").tobytes()
        self.data += np.asarray(bias, dtype="<f4").tobytes()

    def prelu(self, source: str, target: str, slope: np.ndarray) -> None:
        self.layer("PReLU", [source], [target], f"0={slope.size}")
        self.data += np.asarray(slope, dtype="<f4").tobytes()

    def save(self, folder: Path, name: str) -> tuple[Path, Path]:
        param, weights = folder / f"{name}.param", folder / f"{name}.bin"
        param.write_text("7767517\n" + f"{len(self.lines)} {len(self.blobs) + 1}\n" + "\n".join(self.lines) + "\n")
        weights.write_bytes(bytes(self.data))
        return param, weights


def _numpy(state: dict, key: str) -> np.ndarray:
    return state[key].detach().float().cpu().numpy()


def export_compact(model, folder: Path, name: str, storage: str = "fp32", resize: float | None = None):
    """Write a spandrel SRVGGNetCompact (optionally followed by a bicubic resize) as ncnn files."""
    state = model.state_dict()
    w = Writer(storage)
    w.layer("Input", [], ["data"], "")
    w.layer("Split", ["data"], ["x_a", "x_b"], "")
    blob, index = "x_a", 0
    while f"body.{index}.weight" in state:
        if f"body.{index}.bias" in state:
            w.conv(blob, f"b{index}", _numpy(state, f"body.{index}.weight"), _numpy(state, f"body.{index}.bias"))
        else:
            w.prelu(blob, f"b{index}", _numpy(state, f"body.{index}.weight"))
        blob, index = f"b{index}", index + 1
    scale = model.upscale
    w.layer("PixelShuffle", [blob], ["shuffled"], f"0={scale}")
    w.layer("Interp", ["x_b"], ["base"], f"0=1 1={scale:.6e} 2={scale:.6e}")
    w.layer("BinaryOp", ["shuffled", "base"], ["output" if resize is None else "sum"], "0=0")
    if resize is not None:
        w.layer("Interp", ["sum"], ["output"], f"0=3 1={resize:.6e} 2={resize:.6e}")
    return w.save(folder, name)


def export_rrdb(model, folder: Path, name: str, storage: str = "fp32"):
    """Write a spandrel RRDBNet (old-arch keys `model.N...`, nearest x2 upconv) as ncnn files."""
    state = model.state_dict()
    blocks = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("model.1.sub.") and ".RDB" in k)
    w = Writer(storage)
    w.layer("Input", [], ["data"], "")
    w.conv("data", "first", _numpy(state, "model.0.weight"), _numpy(state, "model.0.bias"))
    blob = "first"
    for block in range(blocks):
        block_in = blob
        for rdb in (1, 2, 3):
            rdb_in, features = blob, [blob]
            for conv in range(1, 6):
                key = f"model.1.sub.{block}.RDB{rdb}.conv{conv}.0"
                source = features[0] if conv == 1 else f"cat{block}_{rdb}_{conv}"
                if conv > 1:
                    w.layer("Concat", list(features), [source], "0=0")
                out = f"c{block}_{rdb}_{conv}"
                w.conv(source, out, _numpy(state, f"{key}.weight"), _numpy(state, f"{key}.bias"), leaky=conv < 5)
                features.append(out)
            blob = f"rdb{block}_{rdb}"
            w.layer("Eltwise", [features[-1], rdb_in], [blob], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        w.layer("Eltwise", [blob, block_in], [f"rrdb{block}"], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        blob = f"rrdb{block}"
    trunk = f"model.1.sub.{blocks}"
    w.conv(blob, "trunk", _numpy(state, f"{trunk}.weight"), _numpy(state, f"{trunk}.bias"))
    w.layer("BinaryOp", ["first", "trunk"], ["feat"], "0=0")
    tail = sorted(int(k.split(".")[1]) for k in state if k.startswith("model.") and k.endswith(".weight")
                  and not k.startswith(("model.0.", "model.1.")))
    blob = "feat"
    for index in tail[:-2]:  # nearest x2, then a convolution and leaky ReLU
        w.layer("Interp", [blob], [f"up{index}"], "0=1 1=2.000000e+00 2=2.000000e+00")
        w.conv(f"up{index}", f"upc{index}", _numpy(state, f"model.{index}.weight"),
               _numpy(state, f"model.{index}.bias"), leaky=True)
        blob = f"upc{index}"
    hr, last = tail[-2:]
    w.conv(blob, "hr", _numpy(state, f"model.{hr}.weight"), _numpy(state, f"model.{hr}.bias"), leaky=True)
    w.conv("hr", "output", _numpy(state, f"model.{last}.weight"), _numpy(state, f"model.{last}.bias"))
    return w.save(folder, name)


# -- a reference: run an ncnn graph layer by layer in torch ------------------------------------------------------


def run_graph(model, x):
    """Run a parsed ncnn graph (`v2v.sr.ncnn.NcnnModel`) on float (N, C, H, W) with plain torch ops, one ncnn
    layer at a time, following the graph's own blob wiring. An independent reference for the importers: it knows
    ncnn's layers, not spandrel's architectures. Raises on a layer type or option it does not implement."""
    import torch
    import torch.nn.functional as F

    def activate(layer, y):
        kind = layer.params.get(9, 0)
        if kind == 0:
            return y
        if kind == 1:
            return F.relu(y)
        if kind == 2:
            return F.leaky_relu(y, layer.params[10][0])
        if kind == 4:
            return torch.sigmoid(y)
        raise NotImplementedError(f"activation {kind}")

    def arrays(layer):
        return [torch.from_numpy(array) for array in model.weights.get(layer.name, [])]

    blobs = {}
    for layer in model.layers:
        p = layer.params
        ins = [blobs[name] for name in layer.inputs]
        kind = layer.type
        if kind == "Input":
            out = [x]
        elif kind == "MemoryData":
            (data,) = arrays(layer)
            out = [data.view(1, p.get(2, 1), p.get(1, 1), p.get(0, 1))]
        elif kind == "Split":
            out = ins * len(layer.outputs)
        elif kind in ("Convolution", "Deconvolution"):
            weight, *bias = arrays(layer)
            kw = p[1]
            kh = p.get(11, kw)
            stride, pad, dilation = p.get(3, 1), p.get(4, 0), p.get(2, 1)
            assert p.get(14, pad) == pad and p.get(15, pad) == pad and p.get(16, pad) == pad, "asymmetric padding"
            if kind == "Convolution":
                weight = weight.view(p[0], -1, kh, kw)
                y = F.conv2d(ins[0], weight, bias[0] if bias else None, stride, pad, dilation)
            else:
                weight = weight.view(p[0], -1, kh, kw).transpose(0, 1)
                y = F.conv_transpose2d(ins[0], weight, bias[0] if bias else None, stride, pad, dilation=dilation)
            out = [activate(layer, y)]
        elif kind == "InnerProduct":
            weight, *bias = arrays(layer)
            flat = ins[0].flatten(1)
            y = F.linear(flat, weight.view(p[0], flat.shape[1]), bias[0] if bias else None)
            out = [activate(layer, y)[:, :, None, None]]
        elif kind == "Pooling":
            assert p.get(0, 0) == 1 and p.get(4, 0) == 1, "only global average pooling"
            out = [ins[0].mean(dim=(2, 3), keepdim=True)]
        elif kind == "Crop":
            starts, ends, axes = p[9], p[10], p[11]
            y = ins[0]
            for start, end, axis in zip(starts, ends, axes, strict=True):
                dim = axis if axis < 0 else axis + 1  # ncnn's axes count from the channel axis
                length = y.shape[dim]
                stop = end if end > 0 else length + end
                y = y.narrow(dim, start, stop - start)
            out = [y]
        elif kind == "BinaryOp":
            op = p.get(0, 0)
            a = ins[0]
            b = p.get(2, 0.0) if p.get(1, 0) else ins[1]
            ops = {0: lambda u, v: u + v, 1: lambda u, v: u - v, 2: lambda u, v: u * v, 3: lambda u, v: u / v,
                   7: lambda u, v: v - u, 8: lambda u, v: v / u}  # fmt: skip
            out = [ops[op](a, b)]
        elif kind == "Eltwise":
            assert p.get(0, 1) == 1, "only weighted sums"
            coeffs = p.get(1, [1.0] * len(ins))
            out = [sum(c * t for c, t in zip(coeffs, ins, strict=True))]
        elif kind == "Concat":
            out = [torch.cat(ins, dim=p.get(0, 0) + 1)]
        elif kind == "Swish":
            out = [ins[0] * torch.sigmoid(ins[0])]
        elif kind == "Sigmoid":
            out = [torch.sigmoid(ins[0])]
        elif kind == "ReLU":
            slope = p.get(0, 0.0)
            out = [F.leaky_relu(ins[0], slope) if slope else F.relu(ins[0])]
        elif kind == "PReLU":
            (slope,) = arrays(layer)
            out = [torch.where(ins[0] >= 0, ins[0], ins[0] * slope.view(1, -1, 1, 1))]
        elif kind == "PixelShuffle":
            assert p.get(1, 0) == 0, "only PyTorch's channel order"
            out = [F.pixel_shuffle(ins[0], p[0])]
        elif kind == "Interp":
            mode = {1: "nearest", 2: "bilinear", 3: "bicubic"}[p[0]]
            size = (int(ins[0].shape[2] * p[1]), int(ins[0].shape[3] * p[2]))
            extra = {} if mode == "nearest" else {"align_corners": bool(p.get(6, 0))}
            out = [F.interpolate(ins[0], size=size, mode=mode, **extra)]
        else:
            raise NotImplementedError(f"ncnn layer type {kind}")
        blobs.update(zip(layer.outputs, out, strict=True))
    return blobs[model.layers[-1].outputs[0]]
