"""int8 inference on the CPU: PyTorch static quantization (torch.ao FX), calibrated on the first frames.

Convolutions run as int8 x int8 -> int32 on the x86/oneDNN kernels (VNNI where the CPU has it), weights
quantized per output channel, activations per tensor over their observed min..max (a histogram observer,
which clips outliers, lost up to 2.6 dB on frames unlike the calibration ones). What is not int8, measured on
realesrgan-x4plus (from 37 to 41 dB against float32 on its worst crop):

- everything at output resolution, in float32: the layers from the first upsampling module on, and the
  output convolution, so the picture is not rounded to 256 levels over an activation range (all but the
  output convolution in bf16 took 15% less time in all and cost 0.1 dB in a trial; not done yet);
- additions and products: residual networks add a small update to a large trunk 20+ times, and an 8-bit
  trunk loses the update;
- concatenations are left out of the configuration: torch.ao then concatenates the int8 tensors at the first
  input's scale (the trunk's) instead of one scale shared by all inputs and the output (+1 dB on the worst
  crop; 25% slower);
- resizes: SRVGGNetCompact adds the input, upscaled, to its output, and an 8-bit copy of it cost 10 dB.

Activation ranges come from real frames, not from a fixed set: the first `calibration_frames` frames with
detail run in float32 through observers (their output is the float32 one), then the network is converted.
Flat frames (black, a fade) are run in float and not observed, since their ranges would squeeze the scale of
every later frame.

torch 2.14 warns that its quantized tensor functions are deprecated; they are still the only int8
convolutions in torch itself that need no compiler (torchao's pt2e path with inductor took 3 minutes to
compile realesrgan-x4plus and then ran slower).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import operator
import warnings
from collections.abc import Iterator

import torch

from v2v.errors import UsageError

log = logging.getLogger(__name__)

# A frame "has detail" when its pixel standard deviation reaches this (values in [0, 1]).
DETAIL_STD = 0.04


def check_int8_support() -> None:
    """UsageError unless this torch can run quantized convolutions on this CPU."""
    engines = torch.backends.quantized.supported_engines
    if "x86" not in engines and "fbgemm" not in engines:
        raise UsageError.naming(
            "{dtype} int8 needs torch's x86 quantized kernels (this torch has {engines}); use {dtype} fp32 or bf16",
            engines=engines,
        )


class Int8Network:
    """A float network that observes its first frames with detail, then runs quantized.

    Call `begin(batch)` before each batch of frames (the network may then be called tile by tile on it) and
    `end(batch)` after it; `__call__` runs whichever network is current.
    """

    def __init__(self, network: torch.nn.Module, *, calibration_frames: int = 2):
        from torch.ao.quantization import QConfig, QConfigMapping
        from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

        check_int8_support()
        if calibration_frames < 1:
            raise UsageError(f"int8 calibration needs at least 1 frame, got {calibration_frames}")
        torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        self.float_network = _plain_copy(network)
        # Without VNNI the AVX2 kernels add int8 products in saturating int16, so activations keep 7 bits.
        reduce_range = not torch.cpu._is_vnni_supported()
        qconfig = QConfig(
            activation=MinMaxObserver.with_args(
                dtype=torch.quint8, quant_min=0, quant_max=255, reduce_range=reduce_range
            ),
            weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
        )
        # PReLU's slopes: one vector, quantized per tensor as quint8 like torch's default (qint8 slopes cost 11 dB).
        prelu = QConfig(
            activation=qconfig.activation,
            weight=MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine),
        )
        mapping = QConfigMapping().set_global(qconfig).set_object_type(torch.nn.PReLU, prelu)
        for name in float_modules(self.float_network):
            mapping = mapping.set_module_name(name, None)
        resizes = (torch.nn.functional.interpolate, torch.nn.functional.pixel_shuffle)  # a skip of the input image
        for op in (operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul, torch.cat, *resizes):
            mapping = mapping.set_object_type(op, None)
        self._mapping = mapping
        self._observed = self._prepare()
        self._quantized: torch.nn.Module | None = None
        self.calibration_frames = calibration_frames
        self.frames_observed = 0
        self._observe = False

    def _prepare(self) -> torch.nn.Module:
        """The float network with observers (torch.fx traced); UsageError when it cannot be traced."""
        from torch.ao.quantization.quantize_fx import prepare_fx

        example = torch.rand(1, 3, 32, 32)
        try:
            with _quiet():
                return prepare_fx(copy.deepcopy(self.float_network), self._mapping, (example,))
        except Exception as error:  # torch.fx raises many types when a forward is not traceable
            raise UsageError.naming(
                "{dtype} int8 needs a network torch.fx can trace; {network} cannot ({why}); use {dtype} fp32 or bf16",
                network=type(self.float_network).__name__, why=type(error).__name__,
            ) from None

    # Pickling (Ray sends stages to its workers): neither prepare_fx's bookkeeping nor the converted modules
    # survive it, so the network is prepared again where it lands and calibrates there on its first frames.
    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_observed": None, "_quantized": None, "frames_observed": 0, "_observe": False}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._observed = self._prepare()

    @property
    def calibrated(self) -> bool:
        return self._quantized is not None

    def begin(self, batch: torch.Tensor) -> None:
        """Choose the network for this batch (float (B, 3, H, W) in [0, 1]): observed while calibrating."""
        self._observe = not self.calibrated and has_detail(batch)

    def end(self, batch: torch.Tensor) -> None:
        """Count the batch just run; convert to int8 once enough frames with detail were observed."""
        from torch.ao.quantization.quantize_fx import convert_fx

        if not self._observe:
            return
        self._observe = False
        self.frames_observed += batch.shape[0]
        if self.frames_observed >= self.calibration_frames:
            with _quiet():
                self._quantized = convert_fx(self._observed)
            self._observed = None  # type: ignore[assignment]
            log.info("int8: calibrated on %d frames", self.frames_observed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._quantized is not None:
            with _quiet():
                return self._quantized(x.float())
        return (self._observed if self._observe else self.float_network)(x.float())


def float_modules(network: torch.nn.Module) -> list[str]:
    """Names of the modules kept float32: the output convolution, and every module from the first upsampling
    one (nn.Upsample, nn.PixelShuffle) on, in registration order. UsageError when there is no convolution."""

    modules = [(name, module) for name, module in network.named_modules() if name]
    convolutions = [name for name, module in modules if isinstance(module, torch.nn.Conv2d)]
    if not convolutions:
        raise UsageError.naming("{dtype} int8 found no convolutions to quantize in this model; use fp32 or bf16")
    upsampling = (torch.nn.Upsample, torch.nn.PixelShuffle)
    upsamplers = [i for i, (_, module) in enumerate(modules) if isinstance(module, upsampling)]
    tail = [name for name, _ in modules[upsamplers[0] :]] if upsamplers else []
    return sorted(set(tail) | {convolutions[-1]})


def has_detail(batch: torch.Tensor) -> bool:
    """True when every frame of the batch has enough variation to calibrate on."""
    return bool((batch.float().flatten(1).std(dim=1) >= DETAIL_STD).all())


def _plain_copy(network: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy whose parameters are ordinary tensors (weights loaded under inference_mode are
    inference tensors, which the quantization observers cannot record) and whose activations are not in place."""

    copied = copy.deepcopy(network).float().eval()
    for module in copied.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                module._parameters[name] = torch.nn.Parameter(parameter.detach().clone(), requires_grad=False)
        if getattr(module, "inplace", False):
            module.inplace = False  # the quantized LeakyReLU warns on every call that it cannot work in place
    return copied


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao's warnings about what the module doc explains, which would repeat on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(deprecated|will be removed).*", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Concatenating at the first input's scale is chosen on purpose (see the module doc).
        warnings.filterwarnings("ignore", message=r".*cat operator must share the same quant", category=UserWarning)
        yield
