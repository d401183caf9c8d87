"""RIFE 4.0 frame interpolation: v2v's IFNet, its checkpoint loader, and `Interpolator` for RGB uint8 frames.

The design (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation", ECCV 2022,
as released in Practical-RIFE 4.0): four IFBlocks estimate, coarse to fine (1/8, 1/4, 1/2 and full size), the
flows from the wanted instant t back to both input frames plus a blending mask. Each block sees the frames
warped by the flow so far, t as a constant channel, and the mask, and adds a residual. The output is the two
backward-warped frames blended by the sigmoid of the mask. Because t is an input, any instant in (0, 1) can
be asked for, not only the middle.

Where v2v follows the released inference code, and where it goes further:
- when the second block's residual flow exceeds 32 pixels both ways, the whole estimate restarts at half the
  resolution (the scales double), as the released code does; v2v decides this per sample, so a batch gives
  what single frames give;
- the checkpoint also holds a refinement network (a context net and a U-Net) that RIFE 4.0's own inference
  ("fast mode") skips. `refine=True` runs it: on the clips in BENCHMARKS.md it adds 0.7-1.2 dB for about
  twice the time, so `Interpolator` runs it by default;
- `ensemble=True` also runs each block on the pair the other way round and averages (RIFE 4.x's option;
  about +0.1 dB for 1.1-1.5x the time, off by default). Unlike the released code, a restart is ensembled too;
- `Interpolator(tta=True)` runs the whole network a second time on the pair reversed (b, a at 1 - t) and
  averages the two frames (test-time augmentation by time reversal, as VFI papers report it): +0.2-0.4 dB
  on the clips in BENCHMARKS.md, 0.1-0.25 dB more than `ensemble`, for twice the time; off by default;
- `Interpolator(flow_scale="auto")` (the default) takes the flow at half resolution above 2560x1440, as RIFE's
  authors advise for 4K, and at full resolution otherwise (flow at 2x for small frames did not help:
  BENCHMARKS.md);
- the checkpoint's distillation teacher (`block_tea`) reads the true middle frame, so it exists only in
  training and is not loaded;
- flows, masks, warping and blending run in float32 whatever the convolutions' dtype.

Tensors: float (B, 3, H, W) in [0, 1]; H and W multiples of `IFNet.multiple(scale)` (`Interpolator` pads).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from v2v.devices import resolve_device, tune_for_fixed_shapes
from v2v.errors import ParameterError
from v2v.flow.warp import warp_by_flow
from v2v.frames import check_image, images_to_tensor, tensor_to_images
from v2v.restore.checkpoint import load_strict, read_state
from v2v.restore.registry import ModelTraits, RestoreModel, lookup

log = logging.getLogger(__name__)

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # flow resolution relative to the frame: 0.5 for 4K
AUTO_HALF_SCALE_PIXELS = 2560 * 1440  # "auto" takes the flow at 1/2 above this (RIFE's advice: scale 0.5 for 4K)
TRAINING_ONLY = ("block_tea.",)  # checkpoint entries that need the ground-truth frame (distillation teacher)
LARGE_MOTION = 32.0  # pixels of residual flow (at block 1) above which the estimate restarts coarser


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp `image` (B, C, H, W) by `flow` (B, 2, H, W) in pixels, border padding (v2v's convention);
    float32 out.

    Sampling happens in float32 whatever the compute dtype: fp16 cannot address pixels of a wide frame exactly
    (its step near 1.0 is half a pixel at 1920 wide), and bf16 not even those of a small one.
    """
    return warp_by_flow(image.float(), flow.float())


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution with bias, then PReLU (one slope per channel)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.PReLU(cout))


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by `factor` (half-pixel centres); identity at 1."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)


class IFBlock(nn.Module):
    """One level of the flow pyramid: input at 1/`scale`, two stride-2 convolutions, eight residual
    convolutions, a transposed convolution; returns (flow (B, 4, H, W) in pixels, mask logits (B, 1, H, W)).

    The convolutions run in the dtype of the weights; what goes in and comes out is float32.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*(_conv(width, width) for _ in range(8)))
        self.lastconv = nn.ConvTranspose2d(width, 5, 4, 2, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        feat = self.conv0(x.to(self.lastconv.weight.dtype))
        feat = self.convblock(feat) + feat
        out = _resize(self.lastconv(feat).float(), scale * 2)
        return out[:, :4] * (scale * 2), out[:, 4:5]


class _Down(nn.Module):
    """Two 3x3 convolutions with PReLU, the first of stride 2 (the refinement net's building block)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 2)
        self.conv2 = _conv(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True), nn.PReLU(cout))


class ContextNet(nn.Module):
    """Features of one input frame at 1/2 .. 1/16, each warped to the instant t by the (halved) flow."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = _Down(3, width)
        self.conv2 = _Down(width, 2 * width)
        self.conv3 = _Down(2 * width, 4 * width)
        self.conv4 = _Down(4 * width, 8 * width)

    def forward(self, image: torch.Tensor, flow: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], image.to(self.conv1.conv1[0].weight.dtype)
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = layer(x)
            flow = _resize(flow, 0.5) * 0.5
            features.append(warp(x, flow).to(x.dtype))
        return features


class RefineUNet(nn.Module):
    """The refinement U-Net: a residual in [-1, 1] added to the blended frame."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        c = width
        self.down0 = _Down(17, 2 * c)
        self.down1 = _Down(4 * c, 4 * c)
        self.down2 = _Down(8 * c, 8 * c)
        self.down3 = _Down(16 * c, 16 * c)
        self.up0 = _up(32 * c, 8 * c)
        self.up1 = _up(16 * c, 4 * c)
        self.up2 = _up(8 * c, 2 * c)
        self.up3 = _up(4 * c, c)
        self.conv = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, inputs: torch.Tensor, context0: list[torch.Tensor], context1: list[torch.Tensor]) -> torch.Tensor:
        s0 = self.down0(inputs.to(self.conv.weight.dtype))
        s1 = self.down1(torch.cat((s0, context0[0], context1[0]), 1))
        s2 = self.down2(torch.cat((s1, context0[1], context1[1]), 1))
        s3 = self.down3(torch.cat((s2, context0[2], context1[2]), 1))
        x = self.up0(torch.cat((s3, context0[3], context1[3]), 1))
        x = self.up1(torch.cat((x, s2), 1))
        x = self.up2(torch.cat((x, s1), 1))
        x = self.up3(torch.cat((x, s0), 1))
        return torch.sigmoid(self.conv(x).float()) * 2 - 1


class IFNet(nn.Module):
    """RIFE 4.0's network: `IFNet()(img0, img1, timestep)` -> the frame at `timestep`.

    The convolutions run in the dtype of the weights (`net.to(torch.float16)`); flows, masks, warping and
    blending stay in float32, so a wide frame is sampled exactly and the flow keeps sub-pixel steps.

    Args (forward):
        img0, img1: float (B, 3, H, W) in [0, 1], any float dtype (a batch of 1 is broadcast to the timesteps'
            batch); H and W multiples of `IFNet.multiple(scale)`.
        timestep: a float in [0, 1], or a tensor of B of them ((B,) or (B, 1, 1, 1)).
        scale: flow resolution relative to the frame, one of SCALES (0.5 for 4K).
        refine: also run the refinement net (off in RIFE 4.0's own inference).
        ensemble: average each block's estimate with the one for the pair swapped (at 1 - t).

    Returns:
        float32 (B, 3, H, W).
    """

    # the coarsest block works at 1/32 of 8/scale after a restart for large motion: multiples of 64 at scale 1
    traits = ModelTraits("RIFE", size_multiple=64)

    def __init__(self) -> None:
        super().__init__()
        self.block0 = IFBlock(7, 192)
        self.block1 = IFBlock(12, 128)
        self.block2 = IFBlock(12, 96)
        self.block3 = IFBlock(12, 64)
        self.contextnet = ContextNet()
        self.unet = RefineUNet()

    @classmethod
    def multiple(cls, scale: float = 1.0) -> int:
        """What H and W must be multiples of at flow resolution `scale` (`traits.size_multiple` at 1)."""
        return max(1, round(cls.traits.size_multiple / scale))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float | torch.Tensor = 0.5,
                scale: float = 1.0, refine: bool = False, ensemble: bool = False) -> torch.Tensor:
        if img0.ndim != 4 or img0.shape[1] != 3 or img0.shape != img1.shape:
            raise ValueError(f"expected two float (B, 3, H, W) batches, got {tuple(img0.shape)} and "
                             f"{tuple(img1.shape)}")
        step = self.multiple(scale)
        if img0.shape[-2] % step or img0.shape[-1] % step:
            raise ValueError(f"H and W must be multiples of {step} at scale {scale}, got {tuple(img0.shape[-2:])}")
        times = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
        if bool(((times < 0) | (times > 1)).any()):
            raise ValueError(f"timesteps must lie in [0, 1], got {times.tolist()}")
        batch = max(img0.shape[0], times.numel())
        img0, img1 = img0.float().expand(batch, -1, -1, -1), img1.float().expand(batch, -1, -1, -1)
        t = times.to(img0.device).reshape(-1, 1, 1, 1).expand(batch, 1, *img0.shape[-2:])
        scales = [8 / scale, 4 / scale, 2 / scale, 1 / scale]
        flow, mask, warped0, warped1 = self._estimate(img0, img1, t, scales, ensemble, restart=True)
        weight = torch.sigmoid(mask)
        merged = warped0 * weight + warped1 * (1 - weight)
        if not refine:
            return merged
        context0 = self.contextnet(img0, flow[:, :2])
        context1 = self.contextnet(img1, flow[:, 2:4])
        inputs = torch.cat((img0, img1, warped0, warped1, mask, flow), 1)
        return (merged + self.unet(inputs, context0, context1)).clamp(0, 1)

    def _estimate(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scales: list[float],
                  ensemble: bool, restart: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flow (B, 4, H, W), mask logits and both warped frames, coarse to fine.

        A sample whose residual flow at block 1 is large both ways starts again at doubled scales (once).
        With `ensemble` each block also sees the pair the other way round (frame 1 first, at 1 - t) and the
        two estimates are averaged, as RIFE 4.x's ensemble option does.
        """
        blocks = (self.block0, self.block1, self.block2, self.block3)
        flow, mask = self._block(0, img0, img1, t, None, None, scales[0], ensemble)
        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        large = None
        for level in range(1, 4):
            delta, delta_mask = blocks[level](torch.cat((warped0, warped1, t, mask), 1), flow, scales[level])
            if level == 1 and restart:
                large = ((delta[:, :2].abs().amax((1, 2, 3)) > LARGE_MOTION)
                         & (delta[:, 2:4].abs().amax((1, 2, 3)) > LARGE_MOTION))  # fmt: skip
            if ensemble:
                delta, delta_mask = self._block(level, warped0, warped1, t, mask, flow, scales[level], ensemble,
                                                (delta, delta_mask))
            flow, mask = flow + delta, mask + delta_mask
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        # read only now, with the whole estimate queued: the device is not left idle while the host waits for it
        # (large motion is rare, and then the work after block 1 is thrown away)
        if large is not None and bool(large.any()):
            return self._restart(img0, img1, t, scales, ensemble, large)
        return flow, mask, warped0, warped1

    def _block(self, level: int, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None,
               flow: torch.Tensor | None, scale: float, ensemble: bool,
               forward: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Block `level` on (a, b, t[, mask]) given `flow` (None at level 0); with `ensemble`, averaged with the
        block on (b, a, 1 - t[, -mask]) and the flow's halves swapped. `forward`: the first estimate, if known."""
        block = (self.block0, self.block1, self.block2, self.block3)[level]
        if forward is None:
            inputs = (a, b, t) if mask is None else (a, b, t, mask)
            forward = block(torch.cat(inputs, 1), flow, scale)
        if not ensemble:
            return forward
        swapped_inputs = (b, a, 1 - t) if mask is None else (b, a, 1 - t, -mask)
        swapped_flow = None if flow is None else torch.cat((flow[:, 2:4], flow[:, :2]), 1)
        back, back_mask = block(torch.cat(swapped_inputs, 1), swapped_flow, scale)
        return (forward[0] + torch.cat((back[:, 2:4], back[:, :2]), 1)) / 2, (forward[1] - back_mask) / 2

    def _restart(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scales: list[float],
                 ensemble: bool, large: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_estimate` at doubled scales for the samples flagged `large`, at the same scales for the others
        (which are estimated again from the start: a mixed batch is rare)."""
        coarse = [s * 2 for s in scales]
        if bool(large.all()):
            return self._estimate(img0, img1, t, coarse, ensemble, restart=False)
        first = self._estimate(img0[large], img1[large], t[large], coarse, ensemble, restart=False)
        second = self._estimate(img0[~large], img1[~large], t[~large], scales, ensemble, restart=False)
        merged = []
        for part, rest in zip(first, second, strict=True):
            whole = part.new_empty((large.numel(), *part.shape[1:]))
            whole[large], whole[~large] = part, rest
            merged.append(whole)
        return merged[0], merged[1], merged[2], merged[3]


# -- loading --------------------------------------------------------------------------------------------------


def ifnet_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a RIFE checkpoint that `IFNet` takes: names without DataParallel's `module.`, and the
    training-only teacher left out. The given mapping is not modified."""
    renamed = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    return {name: tensor for name, tensor in renamed.items() if not name.startswith(TRAINING_ONLY)}


def build_from_state(state: Mapping[str, torch.Tensor], source: str) -> IFNet:
    """v2v's IFNet filled strictly from a RIFE 4.0 state dict: every parameter filled, every entry but the
    teacher's used, every shape matching; ModelError naming what differs otherwise."""
    net = IFNet()
    load_strict(net, ifnet_state(state), source)
    return net.eval().requires_grad_(False)


def load_ifnet(model: RestoreModel) -> IFNet:
    """The registry's loader: v2v's IFNet with the weights `model` names (float32, CPU, eval mode)."""
    (path,) = model.weight_paths()
    return build_from_state(read_state(path), str(path))


# -- frames in, frames out ------------------------------------------------------------------------------------


def auto_scale(height: int, width: int) -> float:
    """The flow resolution "auto" picks for frames of this size: 0.5 above 2560x1440 pixels (RIFE's authors
    advise 0.5 for 4K: motion in pixels doubles with the size, and memory quadruples), else 1."""
    return 0.5 if height * width > AUTO_HALF_SCALE_PIXELS else 1.0


def parse_scale(scale: float | str) -> float | str:
    """`Interpolator`'s `flow_scale` checked: "auto", or one of SCALES as a float; ParameterError otherwise."""
    if scale == "auto":
        return "auto"
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = float("nan")
    if value not in SCALES:
        raise ParameterError("flow_scale", f"must be auto or one of {', '.join(f'{s:g}' for s in SCALES)}, got {scale}")
    return value


class Interpolator:
    """New frames between two RGB uint8 frames, at any instants: `Interpolator().between(a, b, [0.5])`.

    Args:
        model: an interpolation model's name in the registry (`v2v models`), or a RestoreModel.
        device: "cpu", "cuda", "cuda:N", or None for CUDA when present.
        dtype: the dtype of the convolutions (flows, warping and blending stay float32): "auto" is fp16 on
            CUDA, bf16 on CPUs with native bf16 (agrees with fp32 to over 50 dB and is about 1.4x faster; see
            BENCHMARKS.md), else fp32; or fp32/fp16/bf16.
        flow_scale: flow resolution relative to the frame, one of 0.25, 0.5, 1, 2, 4, or "auto" (`auto_scale`:
            0.5 above 2560x1440, else 1).
        batch_size: how many instants of one pair go through the network at once (default: 4 on CUDA, 1 on the
            CPU, where a batch is no faster per frame and needs more memory).
        refine: run RIFE's refinement net (0.7-1.2 dB better on real clips, about twice the time); False is
            RIFE 4.0's own "fast mode".
        ensemble: also estimate each flow with the frames swapped and average (RIFE 4.x's ensemble option;
            about +0.1 dB for 1.1-1.5x the time).
        tta: also interpolate the pair reversed (b, a at 1 - t) and average the two frames (+0.2-0.4 dB on
            real clips for twice the time; see BENCHMARKS.md).

    Frames are treated as values: the prepared tensors of the last few images are kept, found by identity,
    so interpolating a sequence pair by pair or one instant at a time converts each image once.
    """

    KEEP = 3  # prepared images kept: the current pair and the one before

    def __init__(self, model: str | RestoreModel = "rife-4.0", device: str | torch.device | None = None,
                 dtype: str | torch.dtype = "auto", flow_scale: float | str = "auto",
                 batch_size: int | None = None, refine: bool = True, ensemble: bool = False, tta: bool = False) -> None:
        self.model = lookup(model, task="interpolate") if isinstance(model, str) else model
        self.flow_scale = parse_scale(flow_scale)
        self.device = resolve_device(device)
        tune_for_fixed_shapes(self.device)  # one frame (or tile) shape a clip
        self.dtype = IFNet.traits.dtype(self.device, dtype)
        self.refine = refine
        self.ensemble = ensemble
        self.tta = tta
        self.batch_size = batch_size if batch_size is not None else (4 if self.device.type == "cuda" else 1)
        if self.batch_size < 1:
            raise ParameterError("batch_size", f"must be at least 1, got {self.batch_size}")
        self.net: IFNet = self.model.load().to(self.device, self.dtype)
        self._prepared: list[tuple[np.ndarray, torch.Tensor]] = []

    def between(self, a: np.ndarray, b: np.ndarray, times: Sequence[float]) -> list[np.ndarray]:
        """The frames at `times` (each in [0, 1]; 0 is `a`, 1 is `b`) between RGB uint8 (H, W, 3) frames
        `a` and `b` of the same size, as RGB uint8 (H, W, 3) arrays in the order of `times`."""
        check_image(a)
        check_image(b)
        if a.shape != b.shape:
            raise ValueError(f"frames to interpolate differ in size: {a.shape[:2]} and {b.shape[:2]}")
        times = [float(t) for t in times]
        if any(not 0.0 <= t <= 1.0 for t in times):
            raise ValueError(f"instants between two frames lie in [0, 1], got {times}")
        out: list[np.ndarray | None] = [a.copy() if t == 0 else b.copy() if t == 1 else None for t in times]
        todo = [i for i, image in enumerate(out) if image is None]
        if todo:
            height, width = a.shape[:2]
            scale = self.scale_for(height, width)
            run = functools.partial(self.net, scale=scale, refine=self.refine, ensemble=self.ensemble)
            with torch.inference_mode():
                x0, x1 = self._prepare(a, scale), self._prepare(b, scale)
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start : start + self.batch_size]
                    stamps = torch.tensor([times[i] for i in chunk])
                    result = run(x0, x1, stamps)
                    if self.tta:
                        result = (result + run(x1, x0, 1 - stamps)) / 2
                    for i, image in zip(chunk, tensor_to_images(result[..., :height, :width]), strict=True):
                        out[i] = image
        return [image for image in out if image is not None]

    def scale_for(self, height: int, width: int) -> float:
        """The flow resolution used for frames of this size (`flow_scale`, or what "auto" picks)."""
        return auto_scale(height, width) if self.flow_scale == "auto" else float(self.flow_scale)

    def _prepare(self, image: np.ndarray, scale: float) -> torch.Tensor:
        """(1, 3, H', W') on the device in the compute dtype, padded on the right and bottom to the multiple
        the network needs at `scale` by repeating the edge (black bars would pull the flow at the border)."""
        for kept, tensor in self._prepared:
            if kept is image:
                return tensor
        height, width = image.shape[:2]
        step = IFNet.multiple(scale)
        pad = (0, -width % step, 0, -height % step)
        tensor = images_to_tensor([image], self.device)
        if any(pad):
            tensor = F.pad(tensor, pad, mode="replicate")
        self._prepared = [*self._prepared[-(self.KEEP - 1) :], (image, tensor)]
        return tensor
