"""BasicVSR (Chan et al., CVPR 2021) with SPyNet flow inside, in the layout of BasicSR's checkpoints.

BasicVSR upscales a sequence x4 with two recurrent branches over 64-channel features:

- SPyNet estimates the flow between every pair of neighbouring low-resolution frames;
- the *backward* branch runs from the last frame to the first: the feature of frame i+1 is warped onto
  frame i, concatenated with frame i, and refined by a trunk of residual blocks;
- the *forward* branch does the same from the first frame to the last;
- each frame's two features are fused and upsampled twice by pixel shuffle, and added to the bilinear x4
  upscale of the frame.

Since the forward branch at frame i depends only on frames <= i, it can be carried from one window to the
next exactly; the backward branch depends on every later frame and is what windows approximate (see
`v2v.restore.video_sr`). The network exposes those steps (`flows`, `backward_features`, `forward_step`,
`reconstruct`) as well as the whole-sequence `forward`.

Tensors: frames float (N, 3, H, W) in [0, 1]; features (N, C, H, W); flows (N-1, 2, H, W) in pixels (dx, dy),
from frame i to frame i+1 (`to_next`) or to frame i-1 (`to_previous`), v2v's convention (`v2v.flow.warp`).
"""

from __future__ import annotations

import math
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from v2v.errors import ModelError
from v2v.flow.warp import warp_by_flow
from v2v.restore.checkpoint import load_strict, read_state
from v2v.restore.registry import ModelTraits, RestoreModel

SPYNET_LEVELS = 6
SPYNET_MULTIPLE = 32  # SPyNet's pyramid halves five times, so it works on sizes that are multiples of 32
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _warp(features: torch.Tensor, flow: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Backward warp in float32 (a half-precision sampling grid is off by pixels on wide frames)."""
    return warp_by_flow(features.float(), flow.float(), padding_mode=padding_mode).to(features.dtype)


class _SpyLevel(nn.Module):
    """One level of SPyNet: five 7x7 convolutions from (reference, warped support, flow) to a flow update."""

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for index, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(inputs, outputs, 7, padding=3))
            if index < len(widths) - 2:
                layers.append(nn.ReLU())
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SPyNet (Ranjan and Black, 2017): coarse-to-fine flow over a 6-level image pyramid.

    `forward(reference, support)`: float (B, 3, H, W) in [0, 1] each -> flow (B, 2, H, W) in pixels from
    `reference` to `support` (warping `support` by it lines it up with `reference`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList([_SpyLevel() for _ in range(SPYNET_LEVELS)])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _pyramid(self, image: torch.Tensor) -> list[torch.Tensor]:
        levels = [(image - self.mean) / self.std]
        for _ in range(SPYNET_LEVELS - 1):
            levels.append(F.avg_pool2d(levels[-1], kernel_size=2, stride=2))
        return levels[::-1]  # coarsest first

    def _flow(self, reference: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        references, supports = self._pyramid(reference), self._pyramid(support)
        flow = None
        for level, (ref, sup) in enumerate(zip(references, supports, strict=True)):
            if flow is None:  # the coarsest level starts from zero flow (also where it is 1 pixel high)
                up = ref.new_zeros(ref.shape[0], 2, ref.shape[2], ref.shape[3])
            else:
                up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
                pad_h, pad_w = ref.shape[2] - up.shape[2], ref.shape[3] - up.shape[3]
                if pad_h or pad_w:  # odd level sizes: repeat the last row/column
                    up = F.pad(up, (0, pad_w, 0, pad_h), mode="replicate")
            warped = warp_by_flow(sup, up, padding_mode="border")
            flow = self.basic_module[level](torch.cat([ref, warped, up], dim=1)) + up
        assert flow is not None
        return flow

    def forward(self, reference: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        if reference.shape != support.shape:
            raise ValueError(f"SPyNet needs two images of one shape, got {tuple(reference.shape)} and "
                             f"{tuple(support.shape)}")
        height, width = reference.shape[-2:]
        size = (math.ceil(height / SPYNET_MULTIPLE) * SPYNET_MULTIPLE,
                math.ceil(width / SPYNET_MULTIPLE) * SPYNET_MULTIPLE)
        reference = F.interpolate(reference, size=size, mode="bilinear", align_corners=False)
        support = F.interpolate(support, size=size, mode="bilinear", align_corners=False)
        flow = F.interpolate(self._flow(reference, support), size=(height, width), mode="bilinear", align_corners=False)
        ratio = torch.tensor([width / size[1], height / size[0]], dtype=flow.dtype, device=flow.device)
        return flow * ratio.view(1, 2, 1, 1)


class _ResidualBlock(nn.Module):
    """conv 3x3, ReLU, conv 3x3, plus the input (no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _Trunk(nn.Module):
    """A propagation branch's refinement: conv from (frame, warped feature) to features, then residual blocks."""

    def __init__(self, inputs: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(inputs, channels, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Sequential(*(_ResidualBlock(channels) for _ in range(blocks))),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class BasicVSR(nn.Module):
    """BasicVSR x4. `forward(frames (B, N, 3, H, W) in [0, 1]) -> (B, N, 3, 4H, 4W)`, the whole sequence.

    Args:
        channels: feature channels (64 in the released models). blocks: residual blocks per branch (30).
    """

    traits = ModelTraits("BasicVSR", scale=4)  # any size: SPyNet resizes to its multiple of 32 itself

    def __init__(self, channels: int = 64, blocks: int = 30) -> None:
        super().__init__()
        self.channels, self.blocks = channels, blocks
        self.spynet = SpyNet()
        self.backward_trunk = _Trunk(channels + 3, channels, blocks)
        self.forward_trunk = _Trunk(channels + 3, channels, blocks)
        self.fusion = nn.Conv2d(2 * channels, channels, 1)
        self.upconv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.upconv2 = nn.Conv2d(channels, 4 * 64, 3, padding=1)
        self.conv_hr = nn.Conv2d(64, 64, 3, padding=1)
        self.conv_last = nn.Conv2d(64, 3, 3, padding=1)

    # -- the steps ------------------------------------------------------------------------------------

    def flows(self, frames: torch.Tensor, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows between neighbours of frames (N, 3, H, W): (to_next (N-1, 2, H, W), to_previous (N-1, 2, H, W)),
        where to_next[i] goes from frame i to i+1 and to_previous[i] from frame i+1 to i. SPyNet runs in
        float32 whatever the frames' dtype, `chunk` pairs at a time."""
        frames = frames.float()
        earlier, later = frames[:-1], frames[1:]
        to_next, to_previous = [], []
        for start in range(0, earlier.shape[0], chunk):
            a, b = earlier[start : start + chunk], later[start : start + chunk]
            pairs = self.spynet(torch.cat([a, b]), torch.cat([b, a]))
            to_next.append(pairs[: a.shape[0]])
            to_previous.append(pairs[a.shape[0] :])
        empty = frames.new_zeros(0, 2, *frames.shape[-2:])
        return (torch.cat(to_next) if to_next else empty), (torch.cat(to_previous) if to_previous else empty)

    def backward_features(self, frames: torch.Tensor, to_next: torch.Tensor) -> torch.Tensor:
        """The backward branch over frames (N, 3, H, W), last to first: features (N, C, H, W)."""
        count, _, height, width = frames.shape
        out = frames.new_empty(count, self.channels, height, width)
        feature = frames.new_zeros(1, self.channels, height, width)
        for i in range(count - 1, -1, -1):
            if i < count - 1:
                feature = _warp(feature, to_next[i : i + 1], "zeros")
            feature = self.backward_trunk(torch.cat([frames[i : i + 1], feature], dim=1))
            out[i] = feature[0]
        return out

    def forward_step(self, frame: torch.Tensor, previous: torch.Tensor | None,
                     to_previous: torch.Tensor | None) -> torch.Tensor:
        """One step of the forward branch: frame (1, 3, H, W), the previous frame's feature (1, C, H, W) or
        None at the start of a sequence, and the flow from this frame to the previous one (1, 2, H, W)."""
        if previous is None:
            feature = frame.new_zeros(1, self.channels, *frame.shape[-2:])
        else:
            assert to_previous is not None
            feature = _warp(previous, to_previous, "zeros")
        return self.forward_trunk(torch.cat([frame, feature], dim=1))

    def reconstruct(self, frame: torch.Tensor, backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
        """The x4 frame (1, 3, 4H, 4W) from the low-resolution frame (1, 3, H, W) and its two features."""
        out = F.leaky_relu(self.fusion(torch.cat([backward, forward], dim=1)), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(self.upconv1(out), 2), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(self.upconv2(out), 2), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        return out + F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)

    # -- the whole sequence ---------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"BasicVSR takes frames (B, N, 3, H, W), got {tuple(frames.shape)}")
        results = []
        for sequence in frames:
            to_next, to_previous = self.flows(sequence)
            backward = self.backward_features(sequence, to_next.to(sequence.dtype))
            feature = None
            outputs = []
            for i in range(sequence.shape[0]):
                flow = to_previous[i - 1 : i] if i else None
                feature = self.forward_step(sequence[i : i + 1], feature, flow)
                outputs.append(self.reconstruct(sequence[i : i + 1], backward[i : i + 1], feature))
            results.append(torch.cat(outputs))
        return torch.stack(results)


# -- loading ---------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"^forward_trunk\.main\.2\.(\d+)\.conv1\.weight$")


def build_from_state(state: dict[str, torch.Tensor], source: str) -> BasicVSR:
    """A BasicVSR sized from a BasicSR-layout state dict and loaded strictly; ModelError for other layouts."""
    head = state.get("forward_trunk.main.0.weight")
    if head is None or "spynet.basic_module.0.basic_module.0.weight" not in state:
        raise ModelError(f"{source} is not a BasicVSR checkpoint (BasicSR layout: spynet.*, forward_trunk.*, "
                         f"backward_trunk.*); its first keys are {', '.join(list(state)[:3])}")
    blocks = sum(1 for key in state if _BLOCK.match(key))
    network = BasicVSR(channels=int(head.shape[0]), blocks=blocks)
    load_strict(network, state, source)
    return network.eval()


def load_file(path: str | os.PathLike[str]) -> BasicVSR:
    """A BasicVSR from a BasicSR checkpoint file (`{"params": state}` or the bare state dict)."""
    return build_from_state(read_state(path), os.fspath(path))


def load(model: RestoreModel) -> BasicVSR:
    """The registry's loader: the network of a named BasicVSR model, from its installed weights."""
    (path,) = model.weight_paths()
    return load_file(path)
