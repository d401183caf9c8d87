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
     by `fusion` (d - D is the detail difference).
   O = E + (1 - a) D + a C + fusion * trust * (d - D), where C moves the edit to its window's mean look
   (below; C = 0 without lookahead).
   Before all this, E's detail contrast is moved to its window's mean, as its look is (`_contrast`: the detail
   around the look grid's cell means is scaled by exp(window mean - own) of the log ratio of the edit's detail
   contrast to the source's, one figure a frame): a flicker that is a gain scales texture as well as colour, and
   on a shot's first frame there is no steadied past to lean on for it.
   A source of another size than the edit (an upscale's original) gives its flow and trust at its own size,
   where they are cheap and its thresholds mean what they say; both are then scaled to the edit's size.
4. Scene cuts restart the filter (nothing is carried across a cut). The cut test is the project's one
   detector, `v2v.scenes`, given the fraction of pixels whose flow passes the forward-backward check.

No start-of-shot transient, and no drift with the edit's jitter: the look of a frame is the low band of
(edit - source), what the edit did free of the content, kept on a grid `LOOK_COLUMNS` cells wide (48 x 20 at
640x272: 11.5 KB of float32 a frame) beside its scene-cut signature (`v2v.scenes.Signature`, 2 KB). Its
*window* is the frames of its shot (up to the nearest cuts) within `lookahead` frames on either side, and C
is the window's mean look minus the frame's own, upsampled. At each restart (the first frame and every cut)
the output is E + C: the shot's look from its first frame, and the running mean counts the window as that
many frames. After it, what enters the moving average is the edit moved to its window's mean, which is
steady already, so the moving average no longer drifts with the edit's jitter (a causal average of the raw
edit's look did, over 30-frame shots, by 3-7 dB: BENCHMARKS.md, issue 15). Shots in the window are told
apart by the frames' signatures; a cut that only the flow's trust reveals splits the window when the main pass
reaches it (the frames before such a cut have taken looks from after it). The looks behind (at most
`lookahead`) are kept for the window; the frames ahead come from one of:

- a *preview*: a second stream of the same (edited, source) pairs, read `lookahead` frames ahead of the
  main one (`v2v stabilize` decodes both clips a second time for it). Nothing is delayed and the buffer
  holds looks and signatures only: at most 2 `lookahead` + 1 of them, 13.4 KB a frame at 640x272 (6.7 MB
  for the default 250 frames) and 15.7 KB at any 16:9 size, 1080p and 4K alike (7.9 MB): the grid is 48
  cells wide whatever the frame's width (a portrait 9:16 frame, 85 rows, takes 56 KB);
- without a preview, `push()` holds back `lookahead` full frames (edited and source) and returns each
  frame `lookahead` frames late; `fuse()` has no lookahead.

CPU work: when the device is the CPU, all the per-frame arithmetic runs in numpy/OpenCV on the calling thread
(see `v2v.flow.warp`), the low band's small grids included (OpenCV's Gaussian, the same kernel as kornia's);
on any other device it all runs in torch there (kornia's Gaussian for the low band).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from v2v import scenes
from v2v.devices import resolve_device
from v2v.errors import ParameterError
from v2v.flow.estimators import FlowEstimator
from v2v.flow.factory import make_flow_estimator
from v2v.flow.occlusion import invalid_mask, outside_mask
from v2v.flow.warp import (
    Array,
    flow_to_planes,
    flow_to_tensor,
    images_to_planes,
    is_uniform_scale,
    per_plane,
    planes_to_images,
    resize_flow,
    resize_planes,
    warp_by_flow,
)
from v2v.frames import LUMA, check_image, images_to_tensor, tensor_to_images

log = logging.getLogger(__name__)

EDIT_RATE = 0.08  # default low_rate without lookahead: the raw edit flickers, so a long memory
LOOK_RATE = 0.2  # with lookahead: the edit moved to its window's mean look is steady (issue 15's short shots)
LOOK_COLUMNS = 48  # width of the grid a frame's look is kept on (rows follow the aspect ratio)
DETAIL_FLOOR = 2 / 255  # added to a frame's detail contrast: a flat frame has none to compare
CONTRAST_LIMIT = 0.7  # a frame's detail contrast moves by at most e^0.7 (2x) either way


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """Knobs of `TemporalFuser`.

    fusion: 0..1, how much of the warped previous output the high band keeps where trusted (0 = the
        edit as it came, apart from the low band). The same knob as `RestyleConfig.fusion` and `--fusion`.
    low_rate: 0..1, the weight of the current edit in the low band's moving average along motion. Without
        lookahead the edit enters as it is (smaller = steadier colour, slower to follow real changes of the
        edit's look); with it the edit enters moved to its look window's mean look, which is steady already,
        so the rate can be higher. None (default): 0.2 with lookahead, 0.08 without (`rate`).
    low_scale: size of the low band's smoothing as a fraction of the frame's width.
    photometric_tolerance: source difference (0..1, luma) at which a warped pixel stops being trusted.
    lookahead: frames ahead whose look seeds the low band at each restart (0 = none). With a preview
        stream only their looks are kept; without one `push()` holds that many full frames back.

    Scene cuts are `v2v.scenes`' call (its thresholds), not a knob here.
    """

    fusion: float = 0.85
    low_rate: float | None = None
    low_scale: float = 1 / 24
    photometric_tolerance: float = 0.10
    lookahead: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fusion <= 1.0:
            raise ParameterError("fusion", f"must be in [0, 1], got {self.fusion}")
        if self.low_rate is not None and not 0.0 < self.low_rate <= 1.0:
            raise ParameterError("low_rate", f"must be in (0, 1], got {self.low_rate}")
        if self.lookahead < 0:
            raise ParameterError("lookahead", f"must be >= 0, got {self.lookahead}")

    @property
    def rate(self) -> float:
        """`low_rate`, or its default for this lookahead."""
        if self.low_rate is not None:
            return self.low_rate
        return LOOK_RATE if self.lookahead else EDIT_RATE


@dataclasses.dataclass
class FusionStep:
    """What the fuser saw at one frame, for debugging: flows (H, W, 2), trust (H, W) float in [0, 1]."""

    index: int
    cut: bool
    flow: np.ndarray | None = None
    flow_back: np.ndarray | None = None
    trust: np.ndarray | None = None


# -- array helpers: numpy (B, C, H, W) float32 on the CPU, torch tensors elsewhere ----------------------


def _luma(batch: Array) -> Array:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma with Rec. 601 weights (kornia's rgb_to_grayscale on a tensor,
    the same weights in numpy)."""
    if isinstance(batch, torch.Tensor):
        from kornia.color import rgb_to_grayscale

        return rgb_to_grayscale(batch)
    red, green, blue = LUMA
    return red * batch[:, 0:1] + green * batch[:, 1:2] + blue * batch[:, 2:3]


def _gaussian_blur(values: Array, sigma: float) -> Array:
    """Gaussian blur of (B, C, h, w) with replicated borders, kernel radius round(3 sigma): kornia's on a
    tensor's device, OpenCV's (the same kernel) on numpy."""
    size = 2 * max(1, round(3 * sigma)) + 1
    if isinstance(values, torch.Tensor):
        from kornia.filters import gaussian_blur2d

        return gaussian_blur2d(values, (size, size), (sigma, sigma), border_type="replicate")
    import cv2

    return per_plane(values, lambda plane: cv2.GaussianBlur(plane, (size, size), sigma,
                                                            borderType=cv2.BORDER_REPLICATE))


def masked_lowpass(values: Array, weight: Array, scale: float) -> Array:
    """Normalised convolution: the `weight`-weighted low-pass of `values`, filled in where weight is 0
    (from the neighbourhood, or in holes wider than the kernel from the trusted area's mean).

    Args:
        values: float (B, C, H, W), torch tensor or numpy array. weight: float (B, 1, H, W) in [0, 1], same kind.
        scale: smoothing length as a fraction of the width (a Gaussian of sigma scale * width / 3).

    Returns:
        float (B, C, H, W) of `values`' kind, smooth.
    """
    height, width = values.shape[-2:]
    # work on a grid of 8 cells per smoothing length (Gaussian sigma = scale * width / 3): cheap, and the
    # result is smooth anyway
    columns = min(width, max(4, round(8 / scale)))
    small = (min(height, max(2, round(height * columns / width))), columns)
    weighted = values * weight
    channels = values.shape[1]
    concatenate = torch.cat if isinstance(values, torch.Tensor) else np.concatenate
    stack = _gaussian_blur(resize_planes(concatenate([weighted, weight], 1), small, "area"), 8 / 3)
    num, den = stack[:, :channels], stack[:, channels:]
    # holes wider than the kernel take the trusted area's mean (zero when nothing is trusted)
    total = weight.sum(axis=(2, 3), keepdims=True)
    mean = weighted.sum(axis=(2, 3), keepdims=True) / total.clip(1e-6, None)
    low = (num + 1e-3 * mean) / (den + 1e-3)
    return resize_planes(low, (height, width), "bilinear")


def flow_trust(
    flow: Array, flow_back: Array, previous_luma: Array, luma: Array, tolerance: float
) -> tuple[Array, Any]:
    """Where the source's flow from frame t to t-1 can be trusted, and how much of the frame passes.

    Args:
        flow, flow_back: (B, 2, H, W) flows t -> t-1 and t-1 -> t (numpy or tensors, one kind).
        previous_luma, luma: (B, 1, H, W) luma of the sources t-1 and t in [0, 1] (`_luma`).
        tolerance: luma difference (0..1) of the warped previous source at which trust falls to 0.

    Returns:
        trust (B, 1, H, W) in [0, 1]: the forward-backward and outside tests (`v2v.flow.occlusion`), softened by
        how well the warped previous source matches; and the fraction of pixels passing those tests (for the
        scene-cut detector): a float for numpy, a 0-d tensor for tensors (not read back here: the detector reads it
        only when it needs it).
    """
    valid = ~(invalid_mask(flow, flow_back) | outside_mask(flow))
    numpy = isinstance(valid, np.ndarray)
    valid_fraction = float(valid.sum()) / valid.size if numpy else valid.float().mean()
    mismatch = abs(warp_by_flow(previous_luma, flow) - luma)  # luma is linear: warp it alone
    trust = (1.0 - mismatch * (1.0 / tolerance)).clip(0, 1)
    return trust * (valid if numpy else valid.to(trust.dtype)), valid_fraction


@dataclasses.dataclass
class _Ahead:
    """What the fuser keeps of a frame ahead: its scene-cut signature and its look (low band of edit - source,
    float32 (1, 3, rows, LOOK_COLUMNS): numpy on the CPU, else a tensor on the fuser's device)."""

    index: int
    signature: scenes.Signature
    look: Any
    texture: float  # log of the edit's detail contrast over the source's, over the whole frame
    shot: int = 0

    @property
    def nbytes(self) -> int:
        structure = self.signature.structure
        look = self.look
        look = look.nbytes if isinstance(look, np.ndarray) else look.element_size() * look.nelement()
        return look + self.signature.histogram.nbytes + (structure.nbytes if structure is not None else 0)


class TemporalFuser:
    """Stabilises a per-frame edit, one frame at a time; see the module docstring for the method.

    Usage:
        fuser = TemporalFuser()                      # DIS flow on the CPU
        for edited, source in pairs:                 # RGB uint8 (H, W, 3) each, one aspect ratio
            for stable in fuser.push(edited, source):
                ...                                  # lagged by `config.lookahead` frames (no preview)
        for stable in fuser.flush():
            ...

        fuser = TemporalFuser(FusionConfig(lookahead=250), preview=zip(edits_again, sources_again))
        for edited, source in pairs:                 # no lag; 250 frames' looks ahead (~14 KB each)
            stable = fuser.push(edited, source)[0]

    `fuse(edited, source)` is the no-lookahead shortcut returning the fused frame directly. Memory holds
    the previous source and output, at most 2 `lookahead` + 1 looks, and (without a preview) `lookahead`
    pending full frames.

    Args:
        config: FusionConfig. estimator: flow estimator (default DIS "fast").
        device: torch device for the fusion arithmetic (the CPU runs it in numpy/OpenCV); None:
            `v2v.devices.resolve_device`. dtype: float32
            (default) or a half type on CUDA.
        on_step: called with a FusionStep (flows, trust map) after every frame, for debugging.
        preview: the same (edited, source) pairs as will be pushed, from the first on, as a second
            stream that the fuser reads ahead of the pushes.
    """

    def __init__(self, config: FusionConfig | None = None, estimator: FlowEstimator | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 on_step: Callable[[FusionStep], None] | None = None,
                 preview: Iterable[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.config = config or FusionConfig()
        self.estimator = estimator or make_flow_estimator("dis")
        self.device = resolve_device(device)
        self.dtype = dtype
        self.on_step = on_step
        self.cuts: list[int] = []
        self._numpy = self.device.type == "cpu"
        self._index = 0
        self._since_restart = 0
        self._previous_source: np.ndarray | None = None
        self._previous_luma: Any = None
        self._previous_signature: scenes.Signature | None = None
        self._previous_output: Any = None
        self._pending: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._preview: Iterator[tuple[np.ndarray, np.ndarray]] | None = iter(preview) if preview is not None else None
        self._ahead: collections.deque[_Ahead] = collections.deque()
        self._behind: collections.deque[_Ahead] = collections.deque(maxlen=self.config.lookahead)
        self._next_ahead = 0
        self._shot = 0  # shot of the frames being observed: ids count up, one per shot
        self._shots = 1
        self._last_signature: scenes.Signature | None = None

    # -- public ---------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the past (the next frame starts afresh, as after a cut)."""
        self._previous_source = None
        self._previous_luma = None
        self._previous_signature = None
        self._previous_output = None
        self._since_restart = 0
        self._behind.clear()

    def fuse(self, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Fused RGB uint8 (H, W, 3) for frame t from its edit and source (no lookahead, or a preview)."""
        if self.config.lookahead and self._preview is None:
            raise ValueError("fuse() returns each frame at once; with lookahead use push() and flush() or a preview")
        self._check(edited, source)
        if self._preview is None:
            self._observe(edited, source)
        return self._fused(edited, source)

    def push(self, edited: np.ndarray, source: np.ndarray) -> list[np.ndarray]:
        """Feed one frame; returns the fused frames now ready (none or one; lagging by `config.lookahead`
        without a preview, at once with one)."""
        if self._preview is not None:
            return [self.fuse(edited, source)]
        self._check(edited, source)
        self._observe(edited, source)
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

    @property
    def ahead_bytes(self) -> int:
        """Bytes held for the look window, ahead and behind (looks and signatures; pending full frames not
        included)."""
        return sum(entry.nbytes for entry in itertools.chain(self._ahead, self._behind))

    # -- internals ------------------------------------------------------------------------------------

    @staticmethod
    def _check(edited: np.ndarray, source: np.ndarray) -> None:
        check_image(edited)
        check_image(source)
        if not is_uniform_scale(edited.shape[:2], source.shape[:2]):
            raise ValueError(f"an edited frame must be its source at one scale both ways, got "
                             f"{edited.shape[1]}x{edited.shape[0]} and {source.shape[1]}x{source.shape[0]}")

    def _planes(self, image: np.ndarray) -> Any:
        if self._numpy:
            return images_to_planes([image])
        return images_to_tensor([image], self.device, self.dtype)

    def _flow(self, flow: np.ndarray) -> Any:
        return flow_to_planes(flow) if self._numpy else flow_to_tensor(flow, self.device, self.dtype)

    def _fused(self, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output = self._step(edited, source)
            return planes_to_images(output)[0] if self._numpy else tensor_to_images(output)[0]

    def _observe(self, edited: np.ndarray, source: np.ndarray) -> None:
        """Keep the signature and look of the next frame ahead."""
        height, width = source.shape[:2]
        grid = (max(1, round(LOOK_COLUMNS * height / width)), min(width, LOOK_COLUMNS))
        if self._numpy:  # area averaging is linear: shrink each image (one OpenCV call), then subtract
            import cv2

            small = [cv2.resize(image.astype(np.float32), grid[::-1], interpolation=cv2.INTER_AREA)
                     for image in (edited, source)]
            look = ((small[0] - small[1]).reshape(*grid, 3) * np.float32(1 / 255)).transpose(2, 0, 1)[None].copy()
        else:
            small = [resize_planes(self._planes(image), grid, "area") for image in (edited, source)]
            look = (small[0] - small[1]).float()
        texture = np.log((_detail(edited, grid) + DETAIL_FLOOR) / (_detail(source, grid) + DETAIL_FLOOR))
        signature = scenes.signature(source)
        if self._last_signature is not None and scenes.signatures_cut(self._last_signature, signature):
            self._shot, self._shots = self._shots, self._shots + 1  # the look window stops at scene cuts
        self._last_signature = signature
        self._ahead.append(_Ahead(self._next_ahead, signature, look, texture, self._shot))
        self._next_ahead += 1

    def _contrast(self, edited: Any, current: _Ahead) -> Any:
        """The edit with its detail contrast (around its look grid's cell means, over the whole frame: per cell it
        would follow the content as it moves under the grid) moved to its window's mean, in log: a gain that
        flickers scales texture as well as colour, and the look (a low band) can't undo that on a shot's first
        frame."""
        others = self._window(current)
        if not others:
            return edited
        mean = (current.texture + sum(entry.texture for entry in others)) / (len(others) + 1)
        grid = current.look.shape[-2:]
        change = float(np.clip(mean - current.texture, -CONTRAST_LIMIT, CONTRAST_LIMIT))
        if abs(change) < 1e-3:  # a steady edit: nothing to move (and two full-frame resizes saved)
            return edited
        factor = float(np.exp(change))
        low = resize_planes(resize_planes(edited, grid, "area"), tuple(edited.shape[-2:]), "bilinear")
        return (low + factor * (edited - low)).clip(0, 1)

    def _read_ahead(self, index: int) -> None:
        """Drop the entries behind frame `index` and, with a preview, read on to `index` + lookahead."""
        while self._ahead and self._ahead[0].index < index:
            self._behind.append(self._ahead.popleft())
        if self._preview is None:
            return
        while self._next_ahead <= index + self.config.lookahead:
            pair = next(self._preview, None)
            if pair is None:
                break
            self._check(*pair)
            self._observe(*pair)
        if not self._ahead or self._ahead[0].index != index:
            raise ValueError(f"the preview stream ended before frame {index}; it must hold the same frames")

    def _correction(self, current: _Ahead, shape: tuple[int, int]) -> tuple[Any, int]:
        """Frame `current`'s look moved to the mean look of its shot within `lookahead` frames on either side:
        that mean minus its look, upsampled to `shape`, and how many frames the mean covers; (None, 1) with no
        other frame of the shot in the window."""
        others = self._window(current)
        if not others:
            return None, 1
        total = current.look * 1
        for entry in others:
            total += entry.look
        count = len(others) + 1
        return resize_planes(total / count - current.look, shape, "bilinear"), count

    def _window(self, current: _Ahead) -> list[_Ahead]:
        """The other frames of `current`'s shot within `lookahead` frames on either side (behind, then ahead)."""
        entries = itertools.chain(self._behind, _after(self._ahead, current.index))
        return [entry for entry in entries if entry.shot == current.shot]

    def _split(self, shot: int) -> None:
        """A cut the signatures alone missed (found with the flow's trust): the frames ahead of it in `shot` are
        a shot of their own. (The frames before it could not know, and took looks from across it.)"""
        fresh, self._shots = self._shots, self._shots + 1
        for entry in self._ahead:
            if entry.shot == shot:
                entry.shot = fresh
        if self._shot == shot:
            self._shot = fresh

    def _restart(self, edited: Any, current: _Ahead, index: int, cut: bool) -> Any:
        if cut:
            self.cuts.append(index)
            log.info("scene cut at frame %d: temporal fusion restarts", index)
            if self._behind and self._behind[-1].shot == current.shot:
                self._split(current.shot)
        edited = self._contrast(edited, current)  # after a split: the window is the new shot's
        correction, frames = self._correction(current, tuple(edited.shape[-2:]))
        self._since_restart = frames  # the running mean starts with the window's weight
        if correction is None:
            return edited
        correction = correction if self._numpy else correction.to(edited.dtype)
        return (edited + correction).clip(0, 1)

    def _step(self, edited_image: np.ndarray, source: np.ndarray) -> Any:
        config = self.config
        index = self._index
        self._index += 1
        self._read_ahead(index)
        current = self._ahead[0]
        edited = self._planes(edited_image)
        step = FusionStep(index=index, cut=False)
        if self._previous_source is None or self._previous_source.shape != source.shape:
            output = self._restart(edited, current, index, cut=False)
        else:
            # 1. flow of the source, and where it can be trusted
            to_previous, from_previous = self.estimator.pair(source, self._previous_source)
            flow, flow_back = self._flow(to_previous), self._flow(from_previous)
            luma = self._source_luma(source)
            trust, valid_fraction = flow_trust(flow, flow_back, self._previous_luma, luma, config.photometric_tolerance)
            assert self._previous_signature is not None
            cut = scenes.signatures_cut(self._previous_signature, current.signature, trusted=valid_fraction)
            step = FusionStep(index=index, cut=cut, flow=to_previous, flow_back=from_previous,
                              trust=self._host(trust[0, 0]) if self.on_step else None)
            if trust.shape[-2:] != edited.shape[-2:]:  # a source of another size: its flow and trust, scaled
                size = tuple(edited.shape[-2:])
                flow, trust = resize_flow(flow, size), resize_planes(trust, size, "bilinear")
            if cut:
                output = self._restart(edited, current, index, cut=True)
            else:
                # 2. previous output onto this frame; 3. two bands around d = P - E (E at its window's contrast)
                edited = self._contrast(edited, current)
                warped = warp_by_flow(self._previous_output, flow)
                difference = warped - edited
                low = masked_lowpass(difference, trust, config.low_scale)
                self._since_restart += 1
                rate = max(config.rate, 1.0 / self._since_restart)
                output = edited + (1.0 - rate) * low + config.fusion * trust * (difference - low)
                correction, _ = self._correction(current, tuple(edited.shape[-2:]))
                if correction is not None:  # the edit enters the low band at its window's mean look
                    output += rate * (correction if self._numpy else correction.to(output.dtype))
                output = output.clip(0, 1)
        if self.on_step is not None:
            self.on_step(step)
        self._previous_source = source
        self._previous_luma = self._source_luma(source) if step.flow is None else luma
        self._previous_signature = current.signature
        self._previous_output = output
        return output

    def _source_luma(self, source: np.ndarray) -> Any:
        """Luma (1, 1, H, W) of an RGB uint8 frame in [0, 1] (numpy: one OpenCV call, the same weights)."""
        if not self._numpy:
            return _luma(self._planes(source))
        return _gray(source)[None, None]

    @staticmethod
    def _host(values: Any) -> np.ndarray:
        return values if isinstance(values, np.ndarray) else values.float().cpu().numpy()


def _detail(image: np.ndarray, grid: tuple[int, int]) -> float:
    """Detail contrast of an RGB uint8 frame: the mean absolute difference of its luma from its cell means on
    `grid` (upsampled), averaged per cell and then over the cells."""
    import cv2

    luma = _gray(image)
    low = cv2.resize(cv2.resize(luma, grid[::-1], interpolation=cv2.INTER_AREA), luma.shape[::-1],
                     interpolation=cv2.INTER_LINEAR)  # fmt: skip
    return float(cv2.resize(np.abs(luma - low), grid[::-1], interpolation=cv2.INTER_AREA).mean())


def _gray(image: np.ndarray) -> np.ndarray:
    """Luma (H, W) float32 in [0, 1] of an RGB uint8 frame (one OpenCV call, `LUMA`'s weights)."""
    import cv2

    return cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY) * np.float32(1 / 255)


def _after(entries: collections.deque[_Ahead], index: int) -> Iterator[_Ahead]:
    """The entries after frame `index`, in order."""
    return (entry for entry in entries if entry.index > index)
