"""IC-Light files for tiny random UNets, in IC-Light's own layout (for tests and `scripts/bench_relight.py`)."""

from __future__ import annotations

from pathlib import Path

import torch


def write_ic_light(path: Path, unet_folder: Path, channels: int, zero: bool = False) -> Path:
    """An IC-Light file for the UNet in `unet_folder`: an offset for every weight of its diffusers state dict, and
    `conv_in.weight` widened to `channels` input channels (random, or all zero with `zero`)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(str(unet_folder))
    generator = torch.Generator().manual_seed(channels)
    offsets = {}
    for name, weight in unet.state_dict().items():
        shape = (weight.shape[0], channels, *weight.shape[2:]) if name == "conv_in.weight" else weight.shape
        offsets[name] = torch.zeros(shape) if zero else torch.randn(shape, generator=generator) * 0.02
    if not zero:  # the new channels carry the conditions: make them count
        offsets["conv_in.weight"][:, 4:] *= 10
    save_file(offsets, str(path))
    return path
