"""Flow-guided temporal fusion: make a per-frame edit stable over time without training.

`TemporalFuser` is fed one (edited, source) pair at a time and returns the fused frame. For frame t:

1. Flow of the *source* between t and t-1 (both directions), and which pixels it can be trusted on: the
   forward-backward and motion-boundary tests (`v2v.flow.occlusion`), not coming from outside the frame,
   and softened by how well the warped previous source matches the current one (so that flow errors and
   lighting changes are not trusted).
2. The previous output is warped onto frame t: P = warp(O[t-1]).
3. The edit is split in two bands around the difference d = P - E:
   - low band (colour, exposure, smooth colour fields): D = the trusted pixels' d, low-passed by
     normalised convolution, which also fills occluded areas from their surroundings. The output takes
     E + (1 - a) D: an exponential moving average along motion trajectories of the edit's own low band,
     so the look converges to the edit's average (its consistent look), not to frame 0's. `a` starts at
     1/(n+1) (a running mean over the first frames) and settles at `low_rate`.
   - high band (texture, strokes, detail): where trusted, the output leans on the warped previous output
     by `strength` (d - D is the detail difference).
   O = E + (1 - a) D + strength * trust * (d - D).
4. Scene cuts (little trusted area, or the warped previous source far from the current one) restart the
   filter: nothing is carried across a cut.

`lookahead` (frames, bounded) delays the output by that many frames and, at each restart (the first
frame and every cut), seeds the low band with the mean look of the window up to the next cut (the look
of a frame: the low band of edit - source, so content motion does not enter), and the running mean then
counts the seed as that many frames. The first frames of a shot thus already sit near the consistent
look instead of on their own edit's. Memory stays flat: the window is `lookahead` frames.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from v2v.errors import UsageError
from v2v.flow.estimators import FlowEstimator, check_pair, make_flow_estimator
from v2v.flow.occlusion import invalid_mask, outside_mask
from v2v.flow.warp import flow_to_tensor, single_threaded, warp_by_flow
from v2v.frames import images_to_tensor, tensor_to_images

log = logging.getLogger(__name__)

_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """Knobs of `TemporalFuser`.

    strength: 0..1, how much of the warped previous output the high band keeps where trusted (0 = the
        edit as it came, apart from the low band).
    low_rate: 0..1, the weight of the current edit in the low band's moving average (smaller = steadier
        colour, slower to follow real changes of the edit's look).
    low_scale: size of the low band's smoothing as a fraction of the frame's width.
    photometric_tolerance: source difference (0..1, luma) at which a warped pixel stops being trusted.
    cut_threshold: mean source difference (0..1) after motion compensation above which a cut is declared.
    cut_min_trusted: a cut is also declared when less than this fraction of pixels is trusted.
    lookahead: frames of delay used to seed the low band at each restart (0 = none; `fuse()` needs 0,
        `push()`/`flush()` take any).
    """

    strength: float = 0.85
    low_rate: float = 0.08
    low_scale: float = 1 / 24
    photometric_tolerance: float = 0.10
    cut_threshold: float = 0.12
    cut_min_trusted: float = 0.25
    lookahead: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise UsageError(f"strength must be in [0, 1], got {self.strength}")
        if not 0.0 < self.low_rate <= 1.0:
            raise UsageError(f"low_rate must be in (0, 1], got {self.low_rate}")
        if self.lookahead < 0:
            raise UsageError(f"lookahead must be >= 0, got {self.lookahead}")


@dataclasses.dataclass
class FusionStep:
    """What the fuser saw at one frame, for debugging: flows (H, W, 2), trust (H, W) float in [0, 1]."""

    index: int
    cut: bool
    flow: np.ndarray | None = None
    flow_back: np.ndarray | None = None
    trust: np.ndarray | None = None


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def masked_lowpass(values: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """Normalised convolution: the `weight`-weighted low-pass of `values`, filled in where weight is 0
    (from the neighbourhood, or in holes wider than the kernel from the trusted area's mean).

    Args:
        values: float (B, C, H, W). weight: float (B, 1, H, W) in [0, 1].
        scale: smoothing length as a fraction of the width (a Gaussian of sigma scale * width / 3).

    Returns:
        float (B, C, H, W), smooth.
    """
    height, width = values.shape[-2:]
    # work on a grid of 8 cells per smoothing length (Gaussian sigma = scale * width / 3): cheap, and the
    # result is smooth anyway
    columns = min(width, max(4, round(8 / scale)))
    small = (min(height, max(2, round(height * columns / width))), columns)
    num = F.interpolate(values * weight, size=small, mode="area")
    den = F.interpolate(weight, size=small, mode="area")
    kernel = _gaussian_kernel(8 / 3, values.device, values.dtype)
    pad = kernel.numel() // 2
    stack = torch.cat([num, den], dim=1)
    channels = stack.shape[1]
    stack = F.pad(stack, (pad, pad, 0, 0), mode="replicate")
    stack = F.conv2d(stack, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    stack = F.pad(stack, (0, 0, pad, pad), mode="replicate")
    stack = F.conv2d(stack, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    num, den = stack[:, :-1], stack[:, -1:]
    # holes wider than the kernel take the trusted area's mean (zero when nothing is trusted)
    total = weight.sum(dim=(2, 3), keepdim=True)
    mean = (values * weight).sum(dim=(2, 3), keepdim=True) / total.clamp_min(1e-6)
    low = (num + 1e-3 * mean) / (den + 1e-3)
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)


def _luma(batch: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch * weights).sum(dim=1, keepdim=True)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """A 16-pixel-wide float thumbnail in [0, 1] (area averages, so small motion barely changes it), for
    cheap scene comparisons."""
    import cv2

    height, width = image.shape[:2]
    size = (16, max(1, round(16 * height / width)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


class TemporalFuser:
    """Stabilises a per-frame edit, one frame at a time; see the module docstring for the method.

    Usage:
        fuser = TemporalFuser()                      # DIS flow on the CPU
        for edited, source in pairs:                 # RGB uint8 (H, W, 3) each, same size
            for stable in fuser.push(edited, source):
                ...                                  # lagged by `config.lookahead` frames
        for stable in fuser.flush():
            ...

    `fuse(edited, source)` is the no-lookahead shortcut returning the fused frame directly. Memory holds
    the previous source and output and at most `lookahead` pending frames.

    Args:
        config: FusionConfig. estimator: flow estimator (default DIS "fast").
        device: torch device for the fusion arithmetic. dtype: float32 (default) or a half type on CUDA.
        on_step: called with a FusionStep (flows, trust map) after every frame, for debugging.
    """

    def __init__(self, config: FusionConfig | None = None, estimator: FlowEstimator | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 on_step: Callable[[FusionStep], None] | None = None) -> None:
        self.config = config or FusionConfig()
        self.estimator = estimator or make_flow_estimator("dis")
        self.device = torch.device(device)
        self.dtype = dtype
        self.on_step = on_step
        self.cuts: list[int] = []
        self._index = 0
        self._since_restart = 0
        self._previous_source: np.ndarray | None = None
        self._previous_output: torch.Tensor | None = None
        self._pending: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._seed: torch.Tensor | None = None

    # -- public ---------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the past (the next frame starts afresh, as after a cut)."""
        self._previous_source = None
        self._previous_output = None
        self._since_restart = 0

    def fuse(self, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Fused RGB uint8 (H, W, 3) for frame t from its edit and source (no lookahead)."""
        if self.config.lookahead:
            raise ValueError("fuse() returns each frame at once; with lookahead use push() and flush()")
        self._check(edited, source)
        return self._fused(edited, source)

    def push(self, edited: np.ndarray, source: np.ndarray) -> list[np.ndarray]:
        """Feed one frame; returns the fused frames now ready (none or one; lagging by `config.lookahead`)."""
        self._check(edited, source)
        self._pending.append((edited, source))
        if len(self._pending) > self.config.lookahead:
            return [self._fused(*self._pending.popleft())]
        return []

    def flush(self) -> list[np.ndarray]:
        """The frames still held back by lookahead, at the end of the input."""
        out = []
        while self._pending:
            out.append(self._fused(*self._pending.popleft()))
        return out

    # -- internals ------------------------------------------------------------------------------------

    @staticmethod
    def _check(edited: np.ndarray, source: np.ndarray) -> None:
        check_pair(edited, source, "an edited frame and its source must have one size")

    def _fused(self, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), single_threaded(self.device):
            return tensor_to_images(self._step(edited, source))[0]

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return images_to_tensor([image], self.device, self.dtype)

    def _lookahead_seed(self, edited: torch.Tensor, source: np.ndarray) -> tuple[torch.Tensor | None, int]:
        """How far this edit's low band is from the window's mean look, and how many frames the window
        holds; (None, 1) without lookahead.

        The look of a frame is the low band of (edit - source): what the edit did, free of the content,
        so frames of a moving shot can be averaged without motion compensation. The window runs over the
        pending frames up to the next scene cut.
        """
        if not self._pending:
            return None, 1
        scale = self.config.low_scale
        ones = torch.ones_like(edited[:, :1])
        mine = masked_lowpass(edited - self._tensor(source), ones, scale)
        total, count = mine.clone(), 1
        before = _thumbnail(source)
        for future, future_source in self._pending:
            after = _thumbnail(future_source)
            if float(np.abs(after - before).mean()) > self.config.cut_threshold:
                break  # the window stops at the next scene cut
            before = after
            total += masked_lowpass(self._tensor(future) - self._tensor(future_source), ones, scale)
            count += 1
        return total / count - mine, count

    def _restart(self, edited: torch.Tensor, source: np.ndarray, index: int, cut: bool) -> torch.Tensor:
        if cut:
            self.cuts.append(index)
            log.info("scene cut at frame %d: temporal fusion restarts", index)
        seed, frames = self._lookahead_seed(edited, source)
        self._since_restart = frames  # the running mean starts with the seed's weight
        return edited if seed is None else (edited + seed).clamp(0, 1)

    def _step(self, edited_image: np.ndarray, source: np.ndarray) -> torch.Tensor:
        config = self.config
        index = self._index
        self._index += 1
        edited = self._tensor(edited_image)
        step = FusionStep(index=index, cut=False)
        if self._previous_source is None or self._previous_source.shape != source.shape:
            output = self._restart(edited, source, index, cut=False)
        else:
            # 1. flow of the source, and where it can be trusted
            to_previous, from_previous = self.estimator.pair(source, self._previous_source)
            flow = flow_to_tensor(to_previous, self.device, self.dtype)
            flow_back = flow_to_tensor(from_previous, self.device, self.dtype)
            trust = (~(invalid_mask(flow, flow_back) | outside_mask(flow))).to(self.dtype)
            current_source = self._tensor(source)
            warped_source = warp_by_flow(self._tensor(self._previous_source), flow)
            mismatch = (_luma(warped_source) - _luma(current_source)).abs()
            trust = trust * (1.0 - mismatch / config.photometric_tolerance).clamp(0, 1)
            trusted = float(trust.mean())
            cut = trusted < config.cut_min_trusted or float(mismatch.mean()) > config.cut_threshold
            step = FusionStep(index=index, cut=cut, flow=to_previous, flow_back=from_previous,
                              trust=trust[0, 0].float().cpu().numpy() if self.on_step else None)
            if cut:
                output = self._restart(edited, source, index, cut=True)
            else:
                # 2. previous output onto this frame; 3. two bands around d = P - E
                warped = warp_by_flow(self._previous_output, flow)
                difference = warped - edited
                low = masked_lowpass(difference, trust, config.low_scale)
                self._since_restart += 1
                rate = max(config.low_rate, 1.0 / self._since_restart)
                output = edited + (1.0 - rate) * low + config.strength * trust * (difference - low)
                output = output.clamp(0, 1)
        if self.on_step is not None:
            self.on_step(step)
        self._previous_source = source
        self._previous_output = output
        return output
