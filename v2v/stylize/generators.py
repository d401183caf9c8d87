"""pix2pix / CycleGAN generators recognised from their state dicts, as spandrel recognises SR networks.

Each layout is one `Layout`: a name, a test on the keys (`matches`) and a builder that reads its size from
the tensors' shapes. `recognise(state)` tries them in order; a state dict no layout takes is a ModelError
naming the layouts tried. Outputs are in [-1, 1] (tanh), inputs too: `translate` maps [0, 1] frames.

- ResNet generator (Johnson et al.'s, CycleGAN's default): 6 or 9 blocks (any count is read), instance norm
  with or without affine parameters, or batch norm. junyanz/pytorch-CycleGAN-and-pix2pix names a block's
  layers `conv_block.N`; vintagify names them `block.N`, at the same indices, so one module loads both.
- U-Net generator (pix2pix's `unet_128` / `unet_256`: 7 or 8 downsamplings, any count is read), batch or
  instance norm, junyanz's nested `model.model.1.model.3...` keys.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from v2v.errors import ModelError

State = Mapping[str, torch.Tensor]


def _norm(kind: str, channels: int, affine: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=affine)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, affine: bool, bias: bool) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim, affine), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """junyanz's ResnetGenerator (reflect padding, two stride-2 downsamplings, `blocks` residual blocks)."""

    def __init__(self, inputs: int, outputs: int, ngf: int, blocks: int, norm: str, affine: bool,
                 bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(inputs, ngf, 7, bias=bias),
                                   _norm(norm, ngf, affine), nn.ReLU()]
        for level in range(2):
            width = ngf * 2**level
            layers += [nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=bias), _norm(norm, width * 2, affine),
                       nn.ReLU()]
        layers += [ResnetBlock(ngf * 4, norm, affine, bias) for _ in range(blocks)]
        for level in range(2):
            width = ngf * 4 // 2**level
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       _norm(norm, width // 2, affine), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, outputs, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetBlock(nn.Module):
    """junyanz's UnetSkipConnectionBlock: down, the inner block, up, with the input concatenated (but for the
    outermost)."""

    def __init__(self, outer: int, inner: int, inputs: int | None, sub: nn.Module | None, outermost: bool,
                 innermost: bool, norm: str, bias: bool) -> None:
        super().__init__()
        self.outermost = outermost
        inputs = inputs or outer
        down = nn.Conv2d(inputs, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers = [down, sub, nn.ReLU(), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, _norm(norm, outer, False)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, _norm(norm, inner, False), sub, nn.ReLU(), up,
                      _norm(norm, outer, False)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, inputs: int, outputs: int, ngf: int, downs: int, norm: str) -> None:
        super().__init__()
        bias = norm != "batch"
        block = UnetBlock(ngf * 8, ngf * 8, None, None, False, True, norm, bias)
        for _ in range(downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, None, block, False, False, norm, bias)
        for scale in (4, 2, 1):
            block = UnetBlock(ngf * scale, ngf * scale * 2, None, block, False, False, norm, bias)
        self.model = UnetBlock(outputs, ngf, inputs, block, True, False, norm, bias)
        self.downs = downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ------------------------------------------------------------------------------------------------- layouts


def _resnet(state: State) -> nn.Module:
    blocks = len({int(m.group(1)) for key in state if (m := re.match(r"model\.(\d+)\.(conv_)?block\.", key))})
    first = state["model.1.weight"]
    ngf, inputs = first.shape[0], first.shape[1]
    last = max(int(m.group(1)) for key in state if (m := re.fullmatch(r"model\.(\d+)\.weight", key)))
    outputs = state[f"model.{last}.weight"].shape[0]
    norm = "batch" if "model.2.running_mean" in state else "instance"
    affine = "model.2.weight" in state
    bias = "model.1.bias" in state
    return ResnetGenerator(inputs, outputs, ngf, blocks, norm, affine, bias)


def _resnet_keys(state: State) -> dict[str, torch.Tensor]:
    """vintagify's `block.N` keys as junyanz's `conv_block.N`."""
    return {re.sub(r"^(model\.\d+)\.block\.", r"\1.conv_block.", key): value for key, value in state.items()}


def _unet(state: State) -> nn.Module:
    downs = sum(1 for key, value in state.items() if key.endswith("weight") and value.dim() == 4) // 2
    first = state["model.model.0.weight"]
    norm = "batch" if any(key.endswith("running_mean") for key in state) else "instance"
    last = max((key for key in state if re.fullmatch(r"model\.model\.\d+\.weight", key)),
               key=lambda key: int(key.split(".")[2]))
    return UnetGenerator(first.shape[1], state[last].shape[1], first.shape[0], downs, norm)


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    matches: Callable[[State], bool]
    build: Callable[[State], nn.Module]
    rename: Callable[[State], dict[str, torch.Tensor]] = dict


LAYOUTS = (
    Layout("ResNet generator (junyanz conv_block.N)",
           lambda s: "model.1.weight" in s and any(".conv_block." in key for key in s), _resnet),
    Layout("ResNet generator (vintagify block.N)",
           lambda s: "model.1.weight" in s and any(re.match(r"model\.\d+\.block\.", key) for key in s),
           _resnet, _resnet_keys),
    Layout("U-Net generator (junyanz model.model.N)", lambda s: "model.model.0.weight" in s, _unet),
)


def _unwrap(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """A checkpoint's generator tensors: a bare state dict, or one under a common key; `module.` prefixes off."""
    for key in ("state_dict", "params_ema", "params", "model", "netG", "G_A", "generator"):
        inner = state.get(key)
        if isinstance(inner, Mapping):
            state = inner
            break
    tensors = {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    return {key: value for key, value in tensors.items() if not key.endswith("num_batches_tracked")}


def recognise(state: Mapping[str, object], source: str = "the state dict") -> nn.Module:
    """The generator `state` is, loaded and in eval mode; ModelError naming the layouts tried otherwise."""
    tensors = _unwrap(state)
    for layout in LAYOUTS:
        if layout.matches(tensors):
            try:
                network = layout.build(tensors)
                network.load_state_dict(layout.rename(tensors))
            except (KeyError, RuntimeError, IndexError) as error:
                reason = str(error).splitlines()[0]
                raise ModelError(f"{source} looks like a {layout.name} but does not load as one: {reason}") from None
            return network.eval()
    tried = "; ".join(layout.name for layout in LAYOUTS)
    raise ModelError(f"{source} is not a generator v2v knows (tried: {tried})")


def load_generator(path: str | Path) -> nn.Module:
    """A generator from a .pth / .pt / .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no generator file {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Mapping[str, object] = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # a file torch cannot read: one line, not a traceback
        raise ModelError(f"cannot read {path} as a checkpoint: {str(error).splitlines()[0]}") from None
    if not isinstance(state, Mapping):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict")
    return recognise(state, str(path))
