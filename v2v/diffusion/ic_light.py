"""IC-Light's files: offsets keyed like the SD 1.5 UNet's diffusers state dict, added to the base's weights, with
`conv_in` widened to 8 input channels (fc: + the foreground's latents) or 12 (fbc: + the background's). See
`v2v.diffusion.relight` for how the widened UNet is used."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from v2v.diffusion.tiles import cut_to_tile
from v2v.errors import ModelError

CONV_IN = "conv_in.weight"
VARIANTS = {8: "fc", 12: "fbc"}  # conv_in's input channels -> IC-Light's model


@dataclasses.dataclass
class ICLightFile:
    """IC-Light offsets read from `path`: `channels` (8: fc, 12: fbc) from `conv_in.weight`'s shape."""

    path: str
    channels: int
    offsets: dict[str, Any]

    @property
    def variant(self) -> str:
        return VARIANTS[self.channels]


def read_ic_light(path: str | os.PathLike[str]) -> ICLightFile:
    """The offsets of an IC-Light file; ModelError (one line) for a file that is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ModelError(f"IC-Light file {text} not found (iclight_sd15_fc.safetensors or iclight_sd15_fbc "
                         "from lllyasviel/ic-light)")
    try:
        offsets = load_file(text)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"IC-Light file {text} is not a safetensors file: {str(exc).splitlines()[0]}") from None
    shape = tuple(offsets[CONV_IN].shape) if CONV_IN in offsets else None
    if shape is None or len(shape) != 4 or shape[1] not in VARIANTS:
        raise ModelError(f"{text} is not an IC-Light file: its {CONV_IN} should take 8 (fc) or 12 (fbc) channels, "
                         f"it is {shape}")
    return ICLightFile(text, shape[1], offsets)


def merge_ic_light(unet: Any, ic_light: ICLightFile, model: str) -> None:
    """Widen `unet.conv_in` to the file's channels (the base's weights first, zeros for the new channels) and add every
    offset to the base's weight of the same name, as IC-Light's demo does. ModelError, naming the file and the base,
    when a name or a shape does not fit (nothing is changed then)."""
    import torch

    base = unet.state_dict()
    conv = unet.conv_in
    for name, offset in ic_light.offsets.items():
        ours = base.get(name)
        expected = (conv.out_channels, ic_light.channels, *conv.kernel_size) if name == CONV_IN else (
            None if ours is None else tuple(ours.shape))
        if expected is None or tuple(offset.shape) != expected:
            theirs = tuple(offset.shape)
            here = "no such weight" if expected is None else f"{expected}"
            raise ModelError(f"IC-Light file {ic_light.path} does not fit base model {model!r}: its {name} is "
                             f"{theirs}, the base has {here}; pass an IC-Light file made for this base (IC-Light's "
                             "own are for SD 1.5)")
    with torch.no_grad():
        weights = unet.state_dict()
        for name, offset in ic_light.offsets.items():
            weight = weights[name]
            if name == CONV_IN:  # the first `in_channels` columns are the base's; the rest are new
                offset = offset[:, : conv.in_channels]
            weight.copy_((weight.float() + offset.to(weight.device, torch.float32)).to(weight.dtype))
        unet.conv_in = WidenedConvIn(conv, ic_light.offsets[CONV_IN][:, conv.in_channels :])


class WidenedConvIn(torch.nn.Module):
    """IC-Light's widened `conv_in` over the noisy latents and the conditions' latents (`conditions`, (B, 4 or 8, h, w),
    set before each pipeline call; repeated for the copies classifier-free guidance makes), written as the sum of two
    convolutions: the base's own over the latents, plus the new channels' weights (no bias) over the conditions. That
    is the one wide convolution over the concatenation, and it leaves the base's path as it was: with zero new weights
    the UNet is the base's bit for bit (a wider convolution over a concatenated input gives its output in another
    memory format, and the GroupNorm after it then rounds differently)."""

    def __init__(self, base: torch.nn.Conv2d, extra: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.in_channels = base.in_channels + int(extra.shape[1])
        self.out_channels = base.out_channels
        self.extra = torch.nn.Conv2d(int(extra.shape[1]), base.out_channels, base.kernel_size, base.stride,
                                     base.padding, bias=False)
        with torch.no_grad():
            self.extra.weight.copy_(extra)
        self.extra.to(base.weight.device, base.weight.dtype)
        self.conditions: torch.Tensor | None = None

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        if self.conditions is None:
            raise RuntimeError("IC-Light's UNet was called without its conditions")
        conditions = cut_to_tile(self.conditions).to(sample)  # a tiled frame's UNet sees one tile (`tiles.py`)
        conditions = conditions.repeat(sample.shape[0] // conditions.shape[0], 1, 1, 1)
        out = self.base(sample)
        return out.add_(self.extra(conditions)) if torch.is_inference_mode_enabled() else out + self.extra(conditions)
