"""Measures of a processed video: temporal stability (warping error) and fidelity (PSNR/SSIM).

Warping error follows Lai et al. 2018 ("Learning Blind Video Temporal Consistency"): the flow is that
of the *original* video (the guide), frame t+1 of the processed video is warped back onto frame t, and
the squared RGB difference (values in [0, 1], averaged over the three channels) is averaged over the
pixels the flow can be trusted on: not occluded by the forward-backward test
|w + ŵ|² > 0.01 (|w|² + |ŵ|²) + 0.5 and not on a motion boundary (`v2v.flow.occlusion`). The score of a
clip is the mean over its frame pairs; the fraction of pixels masked out is reported beside it. A pair
with almost no trusted pixel (under `MIN_TRUSTED` = 5%: a scene cut, where the flow means nothing) has
no warping error: it is left out of the mean and counted in `skipped_pairs`. (Lai et al.'s script
scores a cut's few chance matches or the whole frame, which lets one cut outweigh the rest of a clip.)
A guide of another size at the processed video's aspect ratio (an upscale's original) gives its flow and mask at
its own size; both are scaled to the processed frames.

Everything streams: a meter holds the previous frame only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Iterator

import numpy as np

from v2v.errors import InputError
from v2v.flow.estimators import FlowEstimator

MIN_TRUSTED = 0.05


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 (H, W, 3) images (peak 255); inf when they are equal."""
    mse = float(np.mean((image.astype(np.float32) - reference.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5) of two RGB uint8 (H, W, 3) images,
    the mean over channels and pixels, in [-1, 1]."""
    import cv2

    x, y = image.astype(np.float32), reference.astype(np.float32)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    ratio = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ratio.mean())


def pair_warping_error(current: np.ndarray, following: np.ndarray, flow: np.ndarray,
                       flow_back: np.ndarray) -> tuple[float, float]:
    """Warping error of one frame pair and the fraction of pixels masked out.

    Args:
        current, following: processed frames t and t+1, RGB uint8 (H, W, 3).
        flow: float32 (h, w, 2), original frame t -> t+1. flow_back: t+1 -> t. (h, w) is (H, W) or the
            original's size at the same aspect ratio (scaled here).

    Returns:
        (mean squared error in [0, 1] units over trusted pixels and channels, or NaN when fewer than
        MIN_TRUSTED of the pixels are trusted; masked fraction in [0, 1]).
    """
    from v2v.flow.occlusion import invalid_mask
    from v2v.flow.warp import flow_to_planes, images_to_planes, resize_flow, resize_planes, warp_by_flow

    # numpy and OpenCV on the calling thread (see v2v.flow.warp): a frame's worth of elementwise work
    forward, backward = flow_to_planes(flow), flow_to_planes(flow_back)
    keep = ~invalid_mask(forward, backward)[0, 0]
    size = current.shape[:2]
    if forward.shape[-2:] != size:  # the original's size: its mask and flow, scaled
        keep = resize_planes(keep[None, None].astype(np.float32), size, "bilinear")[0, 0] >= 0.5
        forward = resize_flow(forward, size)
    now, nxt = images_to_planes([current, following])
    warped = warp_by_flow(nxt[None], forward)[0]
    difference = now - warped
    squared = (difference * difference).mean(axis=0)
    count = int(keep.sum())
    error = float(squared[keep].mean(dtype=np.float64)) if count >= MIN_TRUSTED * keep.size else math.nan
    return error, 1.0 - count / keep.size


@dataclasses.dataclass
class VideoScores:
    """Scores of one clip. `warping_error` and `masked_fraction` are means over frame pairs with any
    trusted pixel (`skipped_pairs` counts the others: scene cuts); `psnr`/`ssim` means over frames (None
    without a reference)."""

    frames: int = 0
    warping_error: float | None = None
    masked_fraction: float | None = None
    skipped_pairs: int = 0
    psnr: float | None = None
    ssim: float | None = None

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class ScoreMeter:
    """Accumulates scores frame by frame: `update(frame, guide, reference=None, flows=None)`, then
    `result()`. `flows` = (guide t-1 -> t, guide t -> t-1) when the caller has them already (e.g. cached);
    otherwise `estimator.pair` computes them from the guide."""

    def __init__(self, estimator: FlowEstimator | None = None) -> None:
        self.estimator = estimator
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._warp: list[tuple[float, float]] = []
        self._psnr: list[float] = []
        self._ssim: list[float] = []
        self.frames = 0

    def update(self, frame: np.ndarray, guide: np.ndarray, reference: np.ndarray | None = None,
               flows: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if self._previous is not None:
            before, before_guide = self._previous
            if flows is None:
                if self.estimator is None:
                    raise ValueError("ScoreMeter needs an estimator or the flows of each pair")
                flows = self.estimator.pair(before_guide, guide)
            self._warp.append(pair_warping_error(before, frame, flows[0], flows[1]))
        if reference is not None:
            self._psnr.append(min(psnr(frame, reference), 100.0))
            self._ssim.append(ssim(frame, reference))
        self._previous = (frame, guide)
        self.frames += 1

    def series(self) -> dict[str, list[float]]:
        """Per-frame values so far: warping error of each pair (NaN at cuts), PSNR and SSIM of each frame."""
        return {"warping_error": [error for error, _ in self._warp], "psnr": list(self._psnr), "ssim": list(self._ssim)}

    def result(self) -> VideoScores:
        scores = VideoScores(frames=self.frames)
        usable = [(error, masked) for error, masked in self._warp if not math.isnan(error)]
        scores.skipped_pairs = len(self._warp) - len(usable)
        if usable:
            scores.warping_error = float(np.mean([e for e, _ in usable]))
            scores.masked_fraction = float(np.mean([m for _, m in usable]))
        if self._psnr:
            scores.psnr = float(np.mean(self._psnr))
            scores.ssim = float(np.mean(self._ssim))
        return scores


def score_video(frames: Iterable[np.ndarray], guide: Iterable[np.ndarray],
                estimator: FlowEstimator | None = None, reference: Iterable[np.ndarray] | None = None,
                flows: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
                meter: ScoreMeter | None = None) -> VideoScores:
    """Scores of a processed clip against its original (`guide`, for the flow) and optionally a reference.

    All inputs are iterables of RGB uint8 (H, W, 3) frames of one length, consumed in step; `flows`, when
    given, yields the guide's (t -> t+1, t+1 -> t) flows for each pair instead of `estimator`. Pass a `meter` to
    read its per-frame `series()` afterwards.
    """
    meter = meter or ScoreMeter(estimator)
    references: Iterator[np.ndarray | None] = iter(reference) if reference is not None else _nones()
    flow_pairs = iter(flows) if flows is not None else None
    for index, (frame, source) in enumerate(_in_step(frames, guide, "the guide")):
        pair = next(flow_pairs) if flow_pairs is not None and index > 0 else None
        reference_frame = next(references, _END)
        if reference_frame is _END:
            raise InputError(f"the reference ends after {index} frames but the video goes on; "
                             "they must match frame for frame")
        meter.update(frame, source, reference_frame, pair)  # type: ignore[arg-type]
    if reference is not None and next(references, _END) is not _END:
        raise InputError(f"the reference has more frames than the video ({meter.frames}); "
                         "they must match frame for frame")
    return meter.result()


_END = object()


def _in_step(frames: Iterable[np.ndarray], other: Iterable[np.ndarray], name: str) -> Iterator[tuple]:
    """Pairs of two clips' frames; InputError (one line) when one clip ends before the other."""
    for count, (a, b) in enumerate(itertools.zip_longest(frames, other, fillvalue=_END)):
        if a is _END or b is _END:
            shorter, longer = ("the video", name) if a is _END else (name, "the video")
            raise InputError(f"{shorter} ends after {count} frames but {longer} goes on; "
                             "they must match frame for frame")
        yield a, b


def _nones() -> Iterator[None]:
    while True:
        yield None
