"""FFDNet (Zhang, Zuo and Zhang, TIP 2018), in the layout of KAIR's checkpoints (`model.<i>.weight`).

The image is pixel-unshuffled by 2 (each 2x2 block becomes 4 x channels at half size), a noise level map
(sigma / 255, one value per pixel; constant here) is appended as one more channel, a plain stack of 3x3
convolutions with ReLU predicts the clean half-size blocks, and pixel shuffle puts them back. Odd sizes are
padded by repeating the last row/column and cropped after.

Tensors: images float (B, C, H, W) in [0, 1]; sigma on the [0, 1] scale (sigma / 255), float (B, 1, 1, 1) for one
level per image or (B, 1, H, W) for a level per pixel (FFDNet was trained for spatially varying noise).
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from v2v.errors import ModelError
from v2v.restore.checkpoint import load_strict, read_state
from v2v.restore.registry import ModelTraits, RestoreModel


class FFDNet(nn.Module):
    """FFDNet: `forward(image (B, C, H, W), sigma (B, 1, 1, 1) or (B, 1, H, W)) -> (B, C, H, W)`.

    Args:
        channels: image channels in and out (3 for the colour model). width: feature channels (96).
        layers: convolutions in all (12 for the colour model).
    """

    traits = ModelTraits("FFDNet")  # any size: odd sides are padded inside

    def __init__(self, channels: int = 3, width: int = 96, layers: int = 12) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"FFDNet needs at least 2 layers, got {layers}")
        self.channels = channels
        body: list[nn.Module] = [nn.Conv2d(4 * channels + 1, width, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            body += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        body.append(nn.Conv2d(width, 4 * channels, 3, padding=1))
        self.model = nn.Sequential(*body)

    def forward(self, image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        pad = (0, width % 2, 0, height % 2)
        x = F.pixel_unshuffle(F.pad(image, pad, mode="replicate") if any(pad) else image, 2)
        if sigma.shape[-2:] == (height, width):  # a noise map per pixel: averaged over each 2x2 block
            level = F.avg_pool2d(F.pad(sigma, pad, mode="replicate") if any(pad) else sigma, 2).to(x.dtype)
        else:
            level = sigma.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        out = F.pixel_shuffle(self.model(torch.cat([x, level], dim=1)), 2)
        return out[..., :height, :width]


_CONV = re.compile(r"^model\.(\d+)\.weight$")


def build_from_state(state: dict[str, torch.Tensor], source: str) -> FFDNet:
    """An FFDNet sized from a KAIR-layout state dict and loaded strictly; ModelError for other layouts."""
    convs = sorted(int(match.group(1)) for key in state if (match := _CONV.match(key)))
    if not convs or convs != list(range(0, 2 * len(convs), 2)) or state[f"model.{convs[0]}.weight"].ndim != 4:
        raise ModelError(f"{source} is not an FFDNet checkpoint (KAIR layout: model.0, model.2, ... convolutions); "
                         f"its first keys are {', '.join(list(state)[:3])}")
    first, last = state["model.0.weight"], state[f"model.{convs[-1]}.weight"]
    channels = int(last.shape[0]) // 4
    if int(first.shape[1]) != 4 * channels + 1:
        raise ModelError(f"{source}: first layer takes {first.shape[1]} channels, FFDNet with {channels}-channel "
                         f"images needs {4 * channels + 1} (pixel-unshuffled image and a noise map)")
    network = FFDNet(channels=channels, width=int(first.shape[0]), layers=len(convs))
    load_strict(network, state, source)
    return network.eval()


def load_file(path: str | os.PathLike[str]) -> FFDNet:
    """An FFDNet from a KAIR checkpoint file."""
    return build_from_state(read_state(path), os.fspath(path))


def load(model: RestoreModel) -> FFDNet:
    """The registry's loader: the network of a named FFDNet model, from its installed weights."""
    (path,) = model.weight_paths()
    return load_file(path)
