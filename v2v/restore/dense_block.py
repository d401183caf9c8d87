"""ESRGAN's residual dense block, concatenating into buffers it keeps; the arithmetic is unchanged.

Each dense block concatenates its growing feature maps four times (RRDBNet: 23 x 3 blocks, 276 times a
frame). At video sizes these maps pass glibc's 32 MB limit, above which malloc maps fresh pages for every
block and returns them on free, so each concatenation page-faults its whole output in again. With
realesrgan-x4plus in bf16 a 640x272 frame took 2.9 million page faults (1.0 million with these buffers; the
rest are the upsampling tail's) and an RRDB block 12% more time. The blocks of a network run one after
another, so they share one set of buffers (`Workspace`), made once per input size and reused for every frame.
"""

from __future__ import annotations

import torch
from torch import nn


class Workspace:
    """Concatenation buffers shared by the dense blocks of one network, one per channel count.

    Rebuilt when the input's shape, dtype or device changes; never pickled (Ray ships networks to workers).
    """

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}
        self.key: tuple[object, ...] | None = None

    def cat(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """`torch.cat(tensors, 1)` for channels_last (B, C, H, W) tensors, into this workspace's buffer."""
        first = tensors[0]
        key = (first.shape[0], *first.shape[2:], first.dtype, first.device)
        if key != self.key:
            self.buffers, self.key = {}, key
        channels = sum(tensor.shape[1] for tensor in tensors)
        out = self.buffers.get(channels)
        if out is None:
            shape = (first.shape[0], channels, *first.shape[2:])
            out = torch.empty(shape, dtype=first.dtype, device=first.device, memory_format=torch.channels_last)
            self.buffers[channels] = out
        start = 0
        for tensor in tensors:
            out[:, start : start + tensor.shape[1]].copy_(tensor)
            start += tensor.shape[1]
        return out

    def __getstate__(self) -> dict[str, object]:
        return {"buffers": {}, "key": None}


class DenseBlock(nn.Module):
    """spandrel's ResidualDenseBlock_5C (ESRGAN, ESRGAN+) on the same layers, concatenating in a Workspace.

    Only in inference mode and on channels_last input: training would need the concatenations kept for the
    backward pass, and other layouts take torch.cat.
    """

    def __init__(self, block: nn.Module, workspace: Workspace) -> None:
        super().__init__()
        self.block = block
        self.workspace = workspace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.block
        reuse = torch.is_inference_mode_enabled() and x.is_contiguous(memory_format=torch.channels_last)
        cat = self.workspace.cat if reuse else lambda tensors: torch.cat(tensors, 1)
        x1 = block.conv1(x)
        x2 = block.conv2(cat((x, x1)))
        if block.conv1x1 is not None:
            x2 = x2 + block.conv1x1(x)
        x3 = block.conv3(cat((x, x1, x2)))
        x4 = block.conv4(cat((x, x1, x2, x3)))
        if block.conv1x1 is not None:
            x4 = x4 + x2
        x5 = block.conv5(cat((x, x1, x2, x3, x4)))
        return x5 * 0.2 + x


def share_dense_block_buffers(network: nn.Module) -> int:
    """Wrap every ResidualDenseBlock_5C of `network` in place in a DenseBlock, all sharing one Workspace.

    Returns how many were wrapped. The class is matched by name: it lives in a private module of spandrel.
    """
    workspace = Workspace()
    count = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "ResidualDenseBlock_5C":
                setattr(parent, name, DenseBlock(child, workspace))
                count += 1
    return count
