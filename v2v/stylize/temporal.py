"""Temporal consistency for feed-forward image-to-image networks (style networks, GAN generators).

Per-frame output of these networks flickers: the texture is tied to pixels, and small changes of the input
re-draw it. `MotionFusion` steadies it without training, the idea of Chen et al. (2017) without their trained
flow sub-network:

1. the *source's* flow between frame t and t-1 (RAFT by default: DIS, a third of its cost, misses by fractions
   of a pixel that sharp stylised texture shows) and where it is trusted (`flow_trust`: the
   forward-backward, outside and photometric tests the pixel fuser uses);
2. inside the network, the encoder's features of frame t (a quarter of its size) lean by `feature_weight`
   towards the previous frame's fused features warped along that flow, where trusted; the decoder then
   re-synthesises sharp texture from the steadier features, rather than a blur of two outputs;
3. the decoded output takes its detail (all but a Gaussian low band) from an *anchor*: an earlier output carried
   along the motion by a map of where each pixel sits in it, composed frame by frame and sampled once
   (bicubic), so the texture stays on the scene and stays sharp, where repeated warping of the previous output
   would blur it a little more every frame. The map's validity is the product of the trust along the way (a
   disocclusion takes the frame's own output); the anchor is renewed from the current output every
   `refresh` frames or when less than `min_valid` of it is still valid. The low band is the frame's own,
   moved by `anchor_low` towards the anchor's.

Scene cuts (`v2v.scenes`, told the fraction of trusted pixels) restart it: nothing is carried across a cut.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from v2v import scenes
from v2v.consistency.fusion import flow_trust
from v2v.errors import ParameterError
from v2v.flow.estimators import FlowEstimator
from v2v.flow.warp import flow_to_planes, pixel_grid, resize_flow, resize_planes, warp_by_flow


@dataclasses.dataclass(frozen=True)
class TemporalConfig:
    """feature_weight: 0..1, how far trusted features move to the previous frame's (warped).
    anchor_weight: 0..1, how much of the output's detail comes from the anchor where it is valid (0: no anchor).
    anchor_low: 0..1, how far the output's low band moves to the anchor's.
    low_sigma: the low band's Gaussian sigma in pixels.
    refresh / min_valid: the anchor is renewed after this many frames / when less of it is valid.
    resample: how the anchor is sampled: "bicubic", or "nearest" (keeps pixel-level grain whole).
    tolerance: source luma difference (0..1) at which a warped pixel stops being trusted.
    flow: the flow estimator's name (`v2v.flow.factory`)."""

    feature_weight: float = 0.9
    anchor_weight: float = 1.0
    anchor_low: float = 0.5
    low_sigma: float = 4.0
    refresh: int = 12
    min_valid: float = 0.6
    resample: str = "bicubic"
    tolerance: float = 0.15
    flow: str = "raft"  # DIS's sub-pixel misses show on sharp stylised texture (BENCHMARKS.md, issue 23)

    def __post_init__(self) -> None:
        for name in ("feature_weight", "anchor_weight", "anchor_low", "min_valid"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ParameterError(name, f"must be in [0, 1], got {value}")
        if self.refresh < 1:
            raise ParameterError("refresh", f"must be >= 1, got {self.refresh}")
        if not self.tolerance > 0:
            raise ParameterError("tolerance", f"must be > 0, got {self.tolerance}")


@dataclasses.dataclass
class _Motion:
    flow: torch.Tensor  # (1, 2, H, W) from frame t into t-1, pixels
    trust: torch.Tensor  # (1, 1, H, W) in [0, 1]


class SourceMotion:
    """The source's flow from each frame into the one before, and where it is trusted; None at the first frame
    and at a scene cut (`v2v.scenes`, told the trusted fraction). Shared by `MotionFusion` and Gatys-style
    optimisation (`v2v.stylize.optimize`)."""

    def __init__(self, flow: str = "raft", tolerance: float = 0.15, estimator: FlowEstimator | None = None) -> None:
        if estimator is None:
            from v2v.flow.factory import make_flow_estimator

            estimator = make_flow_estimator(flow)
        self.estimator = estimator
        self.tolerance = tolerance
        self.reset()

    def reset(self) -> None:
        self._source: np.ndarray | None = None
        self._signature: scenes.Signature | None = None
        self.cuts = 0

    def __call__(self, source: np.ndarray, device: torch.device) -> _Motion | None:
        """The flow t -> t-1 and its trust for frame `source` (RGB uint8), or None at the first frame and at a cut."""
        signature = scenes.signature(source)
        previous, previous_signature = self._source, self._signature
        self._source, self._signature = source, signature
        if previous is None or previous.shape != source.shape or previous_signature is None:
            return None
        to_previous, from_previous = self.estimator.pair(source, previous)
        flow, flow_back = flow_to_planes(to_previous), flow_to_planes(from_previous)
        luma, previous_luma = _luma(source), _luma(previous)
        trust, trusted = flow_trust(flow, flow_back, previous_luma, luma, self.tolerance)
        if scenes.signatures_cut(previous_signature, signature, trusted=trusted):
            self.cuts += 1
            return None
        return _Motion(torch.from_numpy(flow).to(device), torch.from_numpy(trust).to(device))


class MotionFusion:
    """Feed it each frame's source (RGB uint8 at the network's input size) with the network's two halves."""

    def __init__(self, config: TemporalConfig | None = None, estimator: FlowEstimator | None = None) -> None:
        self.config = config or TemporalConfig()
        self.motion = SourceMotion(self.config.flow, self.config.tolerance, estimator)
        self.reset()

    @property
    def cuts(self) -> int:
        return self.motion.cuts

    def reset(self) -> None:
        self.motion.reset()
        self._features: torch.Tensor | None = None
        self._anchor: torch.Tensor | None = None
        self._map: torch.Tensor | None = None  # (1, 2, H, W): where each pixel of this frame is in the anchor
        self._valid: torch.Tensor | None = None  # (1, 1, H, W) in [0, 1]
        self._age = 0

    def __call__(self, source: np.ndarray, encode: Callable[[], torch.Tensor],
                 decode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The steadied output (1, 3, H, W) of frame `source`: `encode()` gives its features, `decode(f)` the
        output from features."""
        features = encode()
        motion = self.motion(source, features.device)
        config = self.config
        if motion is not None and self._features is not None and config.feature_weight:
            size = tuple(features.shape[-2:])
            flow = resize_flow(motion.flow, size, "area")
            trust = resize_planes(motion.trust, size, "area").to(features.dtype)
            warped = warp_by_flow(self._features, flow.to(features.dtype))
            features = features + (config.feature_weight * trust) * (warped - features)
        self._features = features
        output = decode(features)
        if config.anchor_weight:
            output = self._anchored(output, motion)
        return output

    def _anchored(self, output: torch.Tensor, motion: _Motion | None) -> torch.Tensor:
        """The output with its detail from the anchor where the anchor is valid (step 3)."""
        config = self.config
        if motion is None or self._anchor is None or self._anchor.shape != output.shape:
            self._renew(output)
            return output
        assert self._map is not None and self._valid is not None
        flow = motion.flow.to(output.dtype)
        self._map = warp_by_flow(self._map, flow)  # composed: a smooth field, so bilinear loses nothing
        self._valid = warp_by_flow(self._valid, flow) * (motion.trust > 0.5).to(output.dtype)
        self._age += 1
        carried = warp_by_flow(self._anchor, self._map - pixel_grid(output), mode=config.resample)
        difference = carried - output
        low = _gaussian(difference, config.low_sigma)
        output = output + self._valid * (config.anchor_weight * (difference - low) + config.anchor_low * low)
        output = output.clamp(0, 1)
        if self._age >= config.refresh or float(self._valid.mean()) < config.min_valid:
            self._renew(output)
        return output

    def _renew(self, output: torch.Tensor) -> None:
        self._anchor = output
        self._map = pixel_grid(output).clone()
        self._valid = torch.ones_like(output[:, :1])
        self._age = 0


def _gaussian(values: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d

    size = 2 * max(1, round(3 * sigma)) + 1
    return gaussian_blur2d(values, (size, size), (sigma, sigma), border_type="replicate")


def _luma(image: np.ndarray) -> np.ndarray:
    import cv2

    return (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0)[None, None]
