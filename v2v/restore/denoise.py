"""`DenoiseStage`: FFDNet denoising with the noise level as an input, and temporal fusion that does not flicker.

**Per frame** (`temporal=False`): each frame goes through FFDNet with its noise level, nothing else.

**Temporal** (`temporal=True`, the default): per-frame denoising leaves residual noise that changes from
frame to frame (it flickers). The stage averages the *noisy* frames along their motion and lets FFDNet
denoise the average, with FFDNet's own per-pixel noise map saying how much noise each pixel of the average
has left:

1. E_k = FFDNet(N_k, sigma) for every frame: the per-frame result, used to find the motion (flow on noisy
   frames is poor) and to judge matches.
2. For frame t and each neighbour k within `radius` frames in the same shot: the DIS flow of E_t -> E_k
   and back, and a weight per pixel w_k = visible (forward-backward check, inside the frame) x
   exp(-|warp(E_k) - E_t|^2 / (2 tol^2)), so that occlusions, flow errors and real changes fall out.
3. A = sum_k w_k warp(N_k) / sum_k w_k (w_t = 1), whose noise level is sigma * sqrt(sum w_k^2) / sum w_k per pixel.
4. The output is FFDNet(A, that noise map).

Where no neighbour is trusted the map is sigma and A = N_t, so the output is exactly the per-frame one.
Neighbours are never taken across a scene cut (`v2v.scenes.is_cut`). Memory: 2 * radius + 1 frames.
(`v2v.consistency.TemporalFuser`, which blends the previous *output* along the motion, was measured too:
it steadies the residual noise but blurs detail and loses PSNR; see BENCHMARKS.md.)

**Noise level `auto`:** estimated per shot from its first `AUTO_FRAMES` frames (fewer if the shot is
shorter), restarting at scene cuts, by `estimate_sigma`:

- Colour: the frame goes to an orthonormal opponent basis (luma, red-blue, green-magenta), so the three planes'
  noise variances sum to R, G and B's whatever their correlation, and texture falls mostly in the luma plane.
- Scale: per plane, the variance of a pixel's noise is the variance of its 2x2 block average plus 3/4 of the
  finest diagonal Haar band HH = (a - b - c + d) / 2 (orthonormal Haar, the three detail bands taken as equal).
  The block average's noise is read from its own HH band, one level down. One level alone misses noise that is
  white only at half resolution: the chroma noise of 4:2:0 video, which the finest band barely sees (that
  estimator read 13.6 on the sample with 4:2:0 noise of 22.9; see BENCHMARKS.md).
- Robustness: a band's noise variance is the 10th percentile of its 4x4 blocks' mean squares, divided by that
  percentile for pure Gaussian noise (chi-square, 16 degrees of freedom): textured blocks sit above it, flat
  ones hold only noise.

The shot's sigma is the median over its first frames, clamped to [MIN_AUTO_SIGMA, MAX_SIGMA]. A clean clip gets
a near-zero sigma and passes almost unchanged.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from v2v.devices import resolve_device, tune_for_fixed_shapes
from v2v.errors import ParameterError, UsageError
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.pipeline import Context
from v2v.restore.registry import RestoreModel, lookup
from v2v.scenes import is_cut

if TYPE_CHECKING:
    import torch

    from v2v.flow.estimators import FlowEstimator

log = logging.getLogger(__name__)

MAX_SIGMA = 75.0  # FFDNet was trained for noise levels up to 75 (of 255)
MIN_AUTO_SIGMA = 0.5
AUTO_FRAMES = 3
RADIUS = 3  # neighbours on each side (7 frames)
MATCH_TOLERANCE = 0.04  # RMS difference of the per-frame results (0-1 scale) at which a match fades


def parse_sigma(value: float | str, parameter: str = "sigma") -> float | str:
    """A noise level on the 0-255 scale in (0, MAX_SIGMA], or "auto"; ParameterError (naming `parameter`)
    otherwise."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise ParameterError(parameter, f"must be a number in (0, {MAX_SIGMA:g}] or auto, got {value!r}") from None
    if not 0 < value <= MAX_SIGMA:
        raise ParameterError(parameter, f"must be in (0, {MAX_SIGMA:g}] on the 0-255 scale (or auto), got {value:g}")
    return float(value)


# rows: unit vectors, so the planes' noise variances sum to those of R, G and B (module doc)
OPPONENT = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], np.float32) / np.sqrt([[3], [2], [6]]).astype(np.float32)
BLOCK = 4  # side of the blocks whose mean squares are ranked
BLOCK_QUANTILE = 0.1
CHI2_AT_QUANTILE = 0.58201  # scipy.stats.chi2.ppf(0.1, 16) / 16: that quantile of a block's mean square / sigma^2


def estimate_sigma(images: list[np.ndarray]) -> float:
    """Noise standard deviation (0-255 scale) of RGB uint8 (H, W, 3) frames, the same scale as the standard
    deviation of (noisy - clean) over all channels: two Haar levels in an opponent colour basis (see the module
    doc); the median over the frames, clamped to [MIN_AUTO_SIGMA, MAX_SIGMA]."""
    estimates = []
    for image in images:
        variance = 0.0
        for plane in np.moveaxis(image.astype(np.float32) @ OPPONENT.T, -1, 0):
            fine, average = _haar(plane)
            coarse, _ = _haar(average)
            variance += 0.75 * _noise_variance(fine) + _noise_variance(coarse)
        estimates.append(np.sqrt(variance / 3))
    return float(np.clip(np.median(estimates), MIN_AUTO_SIGMA, MAX_SIGMA))


def _haar(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finest diagonal Haar band (a - b - c + d) / 2 of every 2x2 block, and the blocks' averages."""
    height, width = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    a, b = plane[0:height:2, 0:width:2], plane[0:height:2, 1:width:2]
    c, d = plane[1:height:2, 0:width:2], plane[1:height:2, 1:width:2]
    return (a - b - c + d) / 2, (a + b + c + d) / 4


def _noise_variance(band: np.ndarray) -> float:
    """Noise variance of a band: a low quantile of its blocks' mean squares, unbiased for Gaussian noise."""
    rows, columns = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    if rows == 0 or columns == 0:  # smaller than a block: too small to rank, so the plain mean square
        return float(np.mean(np.square(band))) if band.size else 0.0
    squares = np.square(band[: rows * BLOCK, : columns * BLOCK]).reshape(rows, BLOCK, columns, BLOCK)
    return float(np.quantile(squares.mean(axis=(1, 3)), BLOCK_QUANTILE)) / CHI2_AT_QUANTILE


class DenoiseStage:
    """Denoise every frame with FFDNet; timing kept (one output per input frame).

    Args:
        sigma: noise level on the 0-255 scale, in (0, 75], or "auto" (estimated per shot).
        temporal: average the noisy frames along their motion before FFDNet (see the module doc); False is
            exactly FFDNet frame by frame.
        device: cpu, cuda, cuda:N (default: cuda when available). dtype: auto (fp16 on CUDA, bf16 on CPUs with
            native bf16: 2.4x faster than fp32 here and 0.02 dB from its PSNR; else fp32), fp32, fp16 or bf16.
        model: a denoise model name or RestoreModel (default ffdnet-color).
        radius: neighbours on each side used by the temporal mode.
        estimator: flow estimator for the temporal mode (default DIS "medium").
    """

    one_to_one = True

    def __init__(self, sigma: float | str = "auto", temporal: bool = True, *, device: str | None = None,
                 dtype: str = "auto", model: str | RestoreModel = "ffdnet-color", radius: int = RADIUS,
                 estimator: FlowEstimator | None = None) -> None:

        self.sigma = parse_sigma(sigma)
        if radius < 1:
            raise UsageError(f"the temporal radius must be >= 1 frame, got {radius}")
        self.temporal, self.radius = temporal, radius
        self.device = resolve_device(device)
        tune_for_fixed_shapes(self.device)  # one frame (or tile) shape a clip
        named = model if isinstance(model, RestoreModel) else lookup(model, task="denoise")
        self.name = named.name
        network = named.load()
        self.dtype = network.traits.dtype(self.device, dtype)
        self.network = network.to(self.device, self.dtype).eval()
        if temporal and estimator is None:
            from v2v.flow import make_flow_estimator

            estimator = make_flow_estimator("dis", preset="medium")
        self.estimator = estimator
        context = radius if temporal else 0
        # exact with a given sigma (the window is all it sees); "auto" depends on where the shot starts
        auto = self.sigma == "auto"
        self.context = Context(before=context, after=max(context, AUTO_FRAMES - 1 if auto else 0), exact=not auto)
        self.sigmas: list[float] = []  # the level used for each shot, in order (for logs and tests)

    # -- FFDNet -------------------------------------------------------------------------------------------

    def denoise(self, images: list[np.ndarray], sigma: float) -> list[np.ndarray]:
        """FFDNet on RGB uint8 (H, W, 3) frames of one size, one noise level (0-255 scale), one frame at a time."""
        return [self._ffdnet(images_to_tensor([image], self.device, self.dtype), sigma / 255.0) for image in images]

    def _ffdnet(self, x: torch.Tensor, sigma: float | torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            level = sigma if isinstance(sigma, torch.Tensor) else torch.full((1, 1, 1, 1), sigma)
            return tensor_to_images(self.network(x, level.to(self.device, self.dtype)))[0]

    # -- the stage ----------------------------------------------------------------------------------------

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        window: collections.deque[_Entry] = collections.deque()
        flows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (serial a, serial b) -> a->b, b->a
        centre = 0  # index in `window` of the next frame to emit
        for serial, (frame, sigma, new_shot) in enumerate(self._levels(frames)):
            if new_shot:
                while centre < len(window):  # finish the shot before (no look past the cut)
                    yield self._output(window, centre, flows)
                    centre += 1
                window.clear()
                flows.clear()
                centre = 0
            window.append(_Entry(serial, frame, sigma, self.denoise([frame.image], sigma)[0]))
            if not self.temporal:
                yield frame.with_image(window.pop().estimate)
                continue
            if len(window) - 1 - centre >= self.radius:
                yield self._output(window, centre, flows)
                centre += 1
            if centre > self.radius:
                gone = window.popleft().serial
                for key in [key for key in flows if gone in key]:
                    del flows[key]
                centre -= 1
        while self.temporal and centre < len(window):
            yield self._output(window, centre, flows)
            centre += 1

    def _levels(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, float, bool]]:
        """(frame, its noise level, whether it starts a shot): the level given, or estimated per shot."""
        previous: Frame | None = None
        waiting: list[Frame] = []  # with "auto": a shot's first frames, until its level is known
        for frame in frames:
            new_shot = previous is None or frame.image.shape != previous.image.shape or is_cut(previous.image,
                                                                                                frame.image)
            previous = frame
            if self.sigma != "auto":
                if new_shot:
                    self.sigmas.append(float(self.sigma))
                yield frame, float(self.sigma), new_shot
                continue
            if new_shot and waiting:
                yield from self._estimated(waiting)
                waiting = []
            if waiting or new_shot:
                waiting.append(frame)
                if len(waiting) == AUTO_FRAMES:
                    yield from self._estimated(waiting)
                    waiting = []
                continue
            yield frame, self.sigmas[-1], False
        if waiting:
            yield from self._estimated(waiting)

    def _estimated(self, shot_start: list[Frame]) -> Iterator[tuple[Frame, float, bool]]:
        sigma = estimate_sigma([frame.image for frame in shot_start])
        self.sigmas.append(sigma)
        log.info("denoise: noise level %.1f for the shot starting at frame %d", sigma, shot_start[0].index)
        for position, frame in enumerate(shot_start):
            yield frame, sigma, position == 0

    def _output(self, window: collections.deque[_Entry], centre: int,
                flows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]) -> Frame:
        """Frame `centre` of the window, fused with its neighbours (steps 2-4 of the module doc). The arithmetic
        runs in numpy/OpenCV on the calling thread, as v2v's fusion does (`v2v.flow.warp`)."""
        import torch

        from v2v.flow.occlusion import invalid_mask, outside_mask
        from v2v.flow.warp import flow_to_planes, images_to_planes, warp_by_flow

        me = window[centre]
        lo, hi = max(0, centre - self.radius), min(len(window), centre + self.radius + 1)
        assert self.estimator is not None
        mine = images_to_planes([me.estimate])
        noisy_sum = images_to_planes([me.frame.image])
        weight_sum = np.ones_like(mine[:, :1])
        square_sum = np.ones_like(weight_sum)
        for other in (window[k] for k in range(lo, hi) if k != centre):
            if (other.serial, me.serial) in flows:
                back, there = flows[(other.serial, me.serial)]
            else:
                there, back = flows[(me.serial, other.serial)] = self.estimator.pair(me.estimate, other.estimate)
            flow, flow_back = flow_to_planes(there), flow_to_planes(back)
            visible = ~(invalid_mask(flow, flow_back) | outside_mask(flow))
            mismatch = np.square(warp_by_flow(images_to_planes([other.estimate]), flow) - mine).mean(axis=1,
                                                                                                    keepdims=True)
            weight = visible * np.exp(-mismatch / np.float32(2 * MATCH_TOLERANCE**2))
            noisy_sum += weight * warp_by_flow(images_to_planes([other.frame.image]), flow)
            weight_sum += weight
            square_sum += weight * weight
        average = torch.from_numpy(noisy_sum / weight_sum).to(self.device, self.dtype)
        level = torch.from_numpy((me.sigma / 255.0) * np.sqrt(square_sum) / weight_sum)
        return me.frame.with_image(self._ffdnet(average, level))


class _Entry(NamedTuple):
    """A frame in the temporal window: its serial number in the stream, the frame, its noise level and its
    per-frame FFDNet result."""

    serial: int
    frame: Frame
    sigma: float
    estimate: np.ndarray
