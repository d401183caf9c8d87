"""Small inference graphs shipped as ONNX or TFLite files, run by torch: each node becomes a torch call on the graph's
own weights (no other runtime, and the GPU path). Only the ops of the graphs v2v reads are ported, and a graph with
another op is refused when it is read.

- `OnnxTorch`: U2-Net-p's op set (convolutions, max pooling, bilinear resizes to another tensor's size, concat, add,
  ReLU, sigmoid, and the shape arithmetic around the resizes, done in numpy).
- `TfliteTorch`: MediaPipe's selfie segmentation (NHWC convolutions, depthwise convolutions and average pooling with
  TF's SAME padding, MediaPipe's `Convolution2DTransposeBias`, hard-swish, squeeze-excite means, bilinear resizes,
  float16 weights), run in NCHW. The flatbuffer is read with the schema ai-edge-litert ships.

Both are checked against their own runtime (onnxruntime, LiteRT) by `tests/test_masks.py`; `scripts/bench_masks.py`
measures which is faster.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _modules() -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    class _OnnxTorch(torch.nn.Module):
        OPS = {"Conv", "Relu", "MaxPool", "Resize", "Concat", "Add", "Sigmoid", "Constant", "Shape", "Gather",
               "Unsqueeze", "Slice", "Cast"}

        def __init__(self, path: str) -> None:
            import onnx
            from onnx import numpy_helper

            super().__init__()
            graph = onnx.load(path).graph
            unknown = {node.op_type for node in graph.node} - self.OPS
            if unknown:
                raise ValueError(f"{path}: ops {sorted(unknown)} are not ported to torch")
            self.names: dict[str, str] = {}
            for number, initializer in enumerate(graph.initializer):
                self.register_buffer(f"w{number}", torch.from_numpy(numpy_helper.to_array(initializer).copy()))
                self.names[initializer.name] = f"w{number}"
            self.nodes = [(node.op_type, list(node.input), list(node.output),
                           {attribute.name: onnx.helper.get_attribute_value(attribute)
                            for attribute in node.attribute}) for node in graph.node]
            for _, _, _, attributes in self.nodes:
                if "value" in attributes:
                    attributes["value"] = numpy_helper.to_array(attributes["value"])
            self.input_name = graph.input[0].name
            self.output_names = [output.name for output in graph.output]

        def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
            values: dict[str, Any] = {self.input_name: image}
            for name, buffer in self.names.items():
                values[name] = getattr(self, buffer)
            for op, inputs, outputs, attributes in self.nodes:
                values[outputs[0]] = self._run(op, [values[name] if name else None for name in inputs], attributes)
            return [values[name] for name in self.output_names]

        @staticmethod
        def _run(op: str, args: list[Any], attributes: dict[str, Any]) -> Any:
            if op == "Conv":
                pads = attributes.get("pads", [0, 0, 0, 0])
                return F.conv2d(args[0], args[1], args[2] if len(args) > 2 else None,
                                stride=attributes.get("strides", 1), padding=(pads[0], pads[1]),
                                dilation=attributes.get("dilations", 1), groups=attributes.get("group", 1))
            if op == "Relu":
                return F.relu(args[0])
            if op == "Sigmoid":
                return torch.sigmoid(args[0])
            if op == "Add":
                return args[0] + args[1]
            if op == "MaxPool":
                return F.max_pool2d(args[0], attributes["kernel_shape"], attributes["strides"],
                                    ceil_mode=bool(attributes.get("ceil_mode", 0)))
            if op == "Resize":  # U2-Net-p's upsample_like: bilinear, pytorch_half_pixel, to a size
                size = [int(v) for v in np.asarray(args[3])[-2:]]
                return F.interpolate(args[0], size=size, mode="bilinear", align_corners=False)
            if op == "Concat":
                if isinstance(args[0], torch.Tensor):
                    return torch.cat(args, dim=attributes["axis"])
                return np.concatenate([np.asarray(a).reshape(-1) for a in args])
            # shape arithmetic, in numpy
            if op == "Constant":
                return attributes["value"]
            if op == "Shape":
                return np.array(args[0].shape, np.int64)
            if op == "Gather":
                return np.take(np.asarray(args[0]), np.asarray(args[1]), axis=attributes.get("axis", 0))
            if op == "Unsqueeze":
                return np.expand_dims(np.asarray(args[0]), tuple(attributes["axes"]))
            if op == "Slice":
                data, starts, ends = np.asarray(args[0]), np.asarray(args[1]), np.asarray(args[2])
                axes = np.asarray(args[3]) if len(args) > 3 else np.arange(len(starts))
                index = [slice(None)] * data.ndim
                for axis, start, end in zip(axes, starts, ends, strict=True):
                    index[int(axis)] = slice(int(start), int(min(end, data.shape[int(axis)])))
                return data[tuple(index)]
            if op == "Cast":
                return np.asarray(args[0]).astype(np.int64)
            raise ValueError(f"op {op} is not ported")

    class _TfliteTorch(torch.nn.Module):
        # builtin operator codes (tensorflow/lite/schema/schema.fbs) of the ops ported
        ADD, AVERAGE_POOL, CONV, DEPTHWISE, DEQUANTIZE, LOGISTIC, MUL, RELU, RESIZE, CUSTOM, MEAN, HARD_SWISH = (
            0, 1, 3, 4, 6, 14, 18, 19, 23, 32, 40, 117)
        PORTED = (ADD, AVERAGE_POOL, CONV, DEPTHWISE, LOGISTIC, MUL, RELU, RESIZE, CUSTOM, MEAN, HARD_SWISH)
        TRANSPOSE = b"Convolution2DTransposeBias"
        DTYPES = {0: np.float32, 1: np.float16, 2: np.int32}

        def __init__(self, path: str) -> None:
            from ai_edge_litert import schema_py_generated as schema

            super().__init__()
            self.schema = schema
            with open(path, "rb") as file:
                model = schema.Model.GetRootAs(file.read(), 0)
            graph = model.Subgraphs(0)
            codes = [(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), code.CustomCode())
                     for code in (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))]
            self.constants: dict[int, Any] = {}
            self.shapes: dict[int, tuple[int, ...]] = {}
            for index in range(graph.TensorsLength()):
                tensor = graph.Tensors(index)
                self.shapes[index] = tuple(int(v) for v in tensor.ShapeAsNumpy())
                data = model.Buffers(tensor.Buffer()).DataAsNumpy()
                if isinstance(data, np.ndarray) and data.size:
                    array = data.view(self.DTYPES[tensor.Type()]).reshape(self.shapes[index])
                    self.constants[index] = array.astype(np.float32) if array.dtype == np.float16 else array
            self.steps: list[tuple[Any, ...]] = []
            for number in range(graph.OperatorsLength()):
                operator = graph.Operators(number)
                code, custom = codes[operator.OpcodeIndex()]
                inputs, outputs = list(operator.InputsAsNumpy()), list(operator.OutputsAsNumpy())
                if code == self.DEQUANTIZE:  # float16 weights: folded here
                    self.constants[outputs[0]] = self.constants[inputs[0]].astype(np.float32)
                    continue
                if code == self.CUSTOM and custom != self.TRANSPOSE or code not in self.PORTED:
                    raise ValueError(f"{path}: op {custom or code} is not ported to torch")
                self.steps.append((code, inputs, outputs[0], self._options(code, operator)))
            self.weights = torch.nn.ParameterList()
            self.slots: dict[int, int] = {}
            for code, inputs, _, _ in self.steps:
                for position, index in enumerate(inputs):
                    if index in self.constants and index not in self.slots:
                        self.slots[index] = len(self.weights)
                        self.weights.append(torch.nn.Parameter(self._layout(code, position, self.constants[index]),
                                                               requires_grad=False))
            self.input_index = int(graph.InputsAsNumpy()[0])
            self.output_index = int(graph.OutputsAsNumpy()[0])

        def _options(self, code: int, operator: Any) -> dict[str, Any]:
            schema, table = self.schema, operator.BuiltinOptions()
            kinds = {self.CONV: schema.Conv2DOptions, self.DEPTHWISE: schema.DepthwiseConv2DOptions,
                     self.ADD: schema.AddOptions, self.MUL: schema.MulOptions,
                     self.RESIZE: schema.ResizeBilinearOptions, self.MEAN: schema.ReducerOptions,
                     self.AVERAGE_POOL: schema.Pool2DOptions}
            if code == self.CUSTOM:  # MediaPipe's TfLiteTransposeConvParams: padding, stride_width, stride_height
                padding, stride_w, stride_h = np.frombuffer(operator.CustomOptionsAsNumpy().tobytes()[:12], np.int32)
                return {"same": int(padding) == 1, "stride": (int(stride_h), int(stride_w)), "act": 0}
            if code not in kinds or table is None:
                return {}
            options = kinds[code]()
            options.Init(table.Bytes, table.Pos)
            if code in (self.CONV, self.DEPTHWISE):
                return {"same": options.Padding() == schema.Padding.SAME,
                        "stride": (options.StrideH(), options.StrideW()),
                        "dilation": (options.DilationHFactor(), options.DilationWFactor()),
                        "act": options.FusedActivationFunction()}
            if code in (self.ADD, self.MUL):
                return {"act": options.FusedActivationFunction()}
            if code == self.AVERAGE_POOL:
                return {"same": options.Padding() == schema.Padding.SAME, "stride": (options.StrideH(),
                        options.StrideW()), "kernel": (options.FilterHeight(), options.FilterWidth()),
                        "act": options.FusedActivationFunction()}
            if code == self.RESIZE:
                return {"align_corners": options.AlignCorners(), "half_pixel": options.HalfPixelCenters()}
            return {"keep": options.KeepDims()}

        def _layout(self, code: int, position: int, array: np.ndarray) -> torch.Tensor:
            """A constant in the layout its torch call takes: NHWC kernels and 4-D operands as NCHW."""
            tensor = torch.from_numpy(np.array(array))  # a copy: the flatbuffer's memory is read-only
            if position == 1 and code == self.CONV:
                return tensor.permute(0, 3, 1, 2).contiguous()  # OHWI -> OIHW
            if position == 1 and code == self.DEPTHWISE:
                return tensor.permute(3, 0, 1, 2).contiguous()  # 1HWO -> O1HW
            if position == 1 and code == self.CUSTOM:
                return tensor.permute(3, 0, 1, 2).contiguous()  # OHWI -> IOHW (conv_transpose2d's)
            if tensor.ndim == 4 and code in (self.ADD, self.MUL):
                return tensor.permute(0, 3, 1, 2).contiguous()
            if tensor.ndim == 1 and tensor.numel() > 1 and code in (self.ADD, self.MUL):
                return tensor.reshape(-1, 1, 1)  # per channel: NHWC's last axis is NCHW's second
            return tensor

        @staticmethod
        def _same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> torch.Tensor:
            """TF's SAME padding: the output is ceil(input / stride), the extra pixel at the bottom and right."""
            pads = []
            for size, k, s, d in zip(x.shape[-2:], kernel, stride, dilation, strict=True):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads.append((total // 2, total - total // 2))
            return F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))

        @staticmethod
        def _activate(x: torch.Tensor, act: int) -> torch.Tensor:
            if act == 1:
                return F.relu(x)
            if act == 3:
                return F.relu6(x)
            if act not in (0, None):
                raise ValueError(f"fused activation {act} is not ported")
            return x

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            """(B, 3, H, W) float in the model's input range -> (B, C, h, w): the graph's output, in NCHW."""
            values: dict[int, Any] = {self.input_index: image}

            def read(index: int) -> Any:
                return self.weights[self.slots[index]] if index in self.slots else values[index]

            for code, inputs, output, options in self.steps:
                args = [read(index) for index in inputs if index >= 0]
                if code == self.CONV or code == self.DEPTHWISE:
                    weight = args[1]
                    groups = weight.shape[0] if code == self.DEPTHWISE else 1
                    x = self._same(args[0], weight.shape[-2:], options["stride"], options["dilation"]) \
                        if options["same"] else args[0]
                    result = F.conv2d(x, weight, args[2] if len(args) > 2 else None, stride=options["stride"],
                                      dilation=options["dilation"], groups=groups)
                    result = self._activate(result, options["act"])
                elif code == self.CUSTOM:
                    x, weight, bias = args
                    full = F.conv_transpose2d(x, weight, bias, stride=options["stride"])
                    height, width = (size * s for size, s in zip(x.shape[-2:], options["stride"], strict=True))
                    top = (full.shape[-2] - height) // 2 if options["same"] else 0
                    left = (full.shape[-1] - width) // 2 if options["same"] else 0
                    result = full[..., top:top + height, left:left + width]
                elif code == self.AVERAGE_POOL:  # TF's SAME pooling averages the pixels inside the frame only
                    x, kernel = args[0], options["kernel"]
                    if options["same"]:
                        ones = self._same(torch.ones_like(x[:, :1]), kernel, options["stride"], (1, 1))
                        x = self._same(x, kernel, options["stride"], (1, 1))
                        result = F.avg_pool2d(x, kernel, options["stride"]) / F.avg_pool2d(ones, kernel,
                                                                                           options["stride"])
                    else:
                        result = F.avg_pool2d(x, kernel, options["stride"])
                    result = self._activate(result, options["act"])
                elif code == self.ADD:
                    result = self._activate(args[0] + args[1], options["act"])
                elif code == self.MUL:
                    result = self._activate(args[0] * args[1], options["act"])
                elif code == self.RELU:
                    result = F.relu(args[0])
                elif code == self.LOGISTIC:
                    result = torch.sigmoid(args[0])
                elif code == self.HARD_SWISH:
                    result = F.hardswish(args[0])
                elif code == self.MEAN:  # over H and W (NHWC axes 1, 2): the squeeze-excite pooling
                    axes = [int(a) for a in np.asarray(self.constants[inputs[1]]).reshape(-1)]
                    if sorted(axes) != [1, 2]:
                        raise ValueError(f"MEAN over axes {axes} is not ported")
                    result = args[0].mean(dim=(2, 3), keepdim=bool(options["keep"]))
                else:  # RESIZE_BILINEAR to a constant size
                    size = [int(v) for v in np.asarray(self.constants[inputs[1]])]
                    result = F.interpolate(args[0], size=size, mode="bilinear",
                                           align_corners=bool(options["align_corners"]))
                values[output] = result
            return values[self.output_index]

    return _OnnxTorch, _TfliteTorch


def OnnxTorch(path: str) -> Any:  # noqa: N802 (classes made on first use: torch is imported only then)
    """An ONNX graph of U2-Net-p's op set as a torch module: `module(image (B, C, H, W))` -> the graph's outputs."""
    return _modules()[0](path)


def TfliteTorch(path: str) -> Any:  # noqa: N802
    """A TFLite graph of MediaPipe selfie segmentation's op set as a torch module, run in NCHW:
    `module(image (B, C, H, W))` -> the graph's output (B, C, h, w)."""
    return _modules()[1](path)
