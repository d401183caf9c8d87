"""Keyframe mode: diffuse every K-th frame and carry its look to the frames between by optical flow.

For a frame t between keyframes a < t < b (as in Rerender-A-Video and EbSynth), each keyframe's output is
warped onto frame t with the flow of the *source* video (t -> a, t -> b), trusted where the
forward-backward check of `v2v.flow` passes, and the two are blended with weights that fall off with the
distance in frames. Where neither side is trusted (both occluded), the distance weights alone decide.
After the last keyframe the clip's last frame becomes a keyframe, so every frame has both sides. A scene
cut (`v2v.scenes.is_cut`) ends a window the same way: the last frame before it and the first after it are
keyframes, and nothing is carried across.

`KeyframeWindow` buffers at most K frames, so memory stays flat whatever the clip's length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from v2v.errors import UsageError
from v2v.flow import FlowEstimator, flow_to_tensor, invalid_mask, warp_by_flow
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.scenes import is_cut

Styled = tuple[Frame, np.ndarray]  # a keyframe and its restyled image


def carry_look(target: np.ndarray, keys: list[Styled], weights: list[float], estimator: FlowEstimator) -> np.ndarray:
    """The restyled keyframes' look carried onto `target` (a source frame, RGB uint8 (H, W, 3)).

    Each key is (keyframe, its output); `weights` (one per key, > 0) say how much each counts where it is
    trusted. Returns RGB uint8 (H, W, 3).
    """
    total = torch.zeros(1, 1, *target.shape[:2])
    blended = torch.zeros(1, 3, *target.shape[:2])
    fallback = torch.zeros_like(blended)
    with torch.inference_mode():
        for (frame, styled), weight in zip(keys, weights, strict=True):
            to_key, from_key = estimator.pair(target, frame.image)
            flow, flow_back = flow_to_tensor(to_key), flow_to_tensor(from_key)
            warped = warp_by_flow(images_to_tensor([styled]), flow)
            trust = (~invalid_mask(flow, flow_back)).float() * weight
            blended += warped * trust
            total += trust
            fallback += warped * (weight / sum(weights))
        seen = total > 0
        out = torch.where(seen, blended / total.clamp_min(1e-8), fallback)
    return tensor_to_images(out)[0]


class KeyframeWindow:
    """Feeds frames in order; diffuses every `every`-th frame with `restyle` and yields (source frame, its
    restyled image) for all frames, in order (the frames between two keyframes come out once the second
    one is done)."""

    def __init__(
        self,
        every: int,
        restyle: Callable[[Frame], np.ndarray],
        estimator: FlowEstimator,
        on_cut: Callable[[], None] | None = None,
    ) -> None:
        if every < 2:
            raise UsageError(f"a keyframe interval must be >= 2, got {every}")
        self.every = every
        self.restyle = restyle
        self.estimator = estimator
        self.on_cut = on_cut
        self.keyframes = 0
        self.cuts: list[int] = []

    def process(self, frames: Iterator[Frame]) -> Iterator[Styled]:
        left: Styled | None = None
        between: list[Frame] = []
        previous: Frame | None = None
        for frame in frames:
            if previous is not None and is_cut(previous.image, frame.image):
                # nothing is carried across a cut: the old scene's last frame closes its gap as a keyframe
                self.cuts.append(frame.index)
                if between:
                    yield from self._close(left, between)
                left, between = None, []
                if self.on_cut is not None:
                    self.on_cut()
            previous = frame
            if left is not None and len(between) < self.every - 1:
                between.append(frame)
                continue
            right = self._key(frame)
            if left is not None:
                yield from self._between(left, between, right)
            yield right
            left, between = right, []
        if left is not None and between:  # the last frame closes the final gap as a keyframe
            yield from self._close(left, between)

    def _close(self, left: Styled | None, between: list[Frame]) -> Iterator[Styled]:
        right = self._key(between.pop())
        if left is not None:
            yield from self._between(left, between, right)
        yield right

    def _key(self, frame: Frame) -> Styled:
        self.keyframes += 1
        return frame, self.restyle(frame)

    def _between(self, left: Styled, frames: list[Frame], right: Styled) -> Iterator[Styled]:
        span = right[0].index - left[0].index
        for frame in frames:
            position = (frame.index - left[0].index) / span if span else 0.5
            image = carry_look(frame.image, [left, right], [1.0 - position, position], self.estimator)
            yield frame, image
