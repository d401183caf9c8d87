"""Latent flow fusion: during the first steps of denoising, each frame's latents lean on the previous frame's
latents at the same step, warped by the *source's* optical flow, where that flow is trusted.

For frame t and denoising step i < ceil(`fraction` x the steps the pipeline runs), after the scheduler's step
(diffusers' `callback_on_step_end`, which every family's pipeline calls with `latents`):

    z_t[i] <- z_t[i] + weight * trust * (warp(z_{t-1}[i], flow t -> t-1) - z_t[i])

- flow and trust are those of the pixel fuser (`v2v.consistency.fusion.flow_trust`: the forward-backward and
  outside tests, softened where the warped previous source does not match), on the source frames, then taken to
  the latent grid: scaled like the frames (`--max-side`), padded like them (padding is not trusted), and
  area-averaged down to the latent grid (flow vectors scaled with it). The warp is `v2v.flow.warp_by_flow`. Each
  pair's flow is estimated once: the stage's pixel fuser reads the same pairs from `RememberedPairs`.
- the latents are the family's (`Family.unpack_latents`/`pack_latents`): UNets and SD3 denoise a (B, C, h, w)
  grid already; FLUX and Qwen-Image pack 2x2 patches of it into tokens, unpacked here and packed back.
- z_{t-1}[i] is the previous frame's latents after its own blend, so the tie runs along the shot. Only the steps
  that blend are kept: at most that many (1, C, h, w) float32 grids (about 64 KB a step at 512x512).
- nothing links across a scene cut (the `cuts` the stage gets from `v2v.scenes`), nor between frames that are not
  consecutive in the clip (keyframe mode's keyframes, inpaint's frames with nothing to paint): such a frame starts
  the chain afresh, like a shot's first frame, which is also the anchor of cross-frame attention.
- batches: a pipeline call's frames are denoised together, step by step, so at step i the callback holds every
  frame's latents at step i. They are blended in order within the call: frame 0 of the batch with the last frame of
  the previous call (kept from its run), frame j with frame j - 1 of the same call, already blended. That is what
  batch size 1 does, so a batch gives what single frames give (up to batched rounding).

With weight 0 (or temporal off) the stage passes no callback: the pipeline call is the plain one.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from v2v.diffusion.registry import Family
from v2v.flow import FlowEstimator
from v2v.flow.warp import resize_flow, resize_planes


@dataclasses.dataclass
class _Link:
    """The source's flow from a frame to the one before, (1, 2, H, W), and its trust, (1, 1, H, W), at the source's
    size: float32 numpy on the CPU (full-frame work on the calling thread, as the pixel fuser does it), tensors on
    other devices; how the frame was scaled and padded for the pipeline; and the device the grid goes to."""

    flow: Any
    trust: Any
    scaled: tuple[int, int]
    padded: tuple[int, int]
    device: torch.device
    _on_grid: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_grid(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow (in latent cells) and trust on the latent grid of `size` (h, w), which covers the padded frame:
        float32 tensors on the device."""
        if self._on_grid is None or tuple(self._on_grid[0].shape[-2:]) != tuple(size):
            flow, trust = _resized(self.flow, self.trust, self.scaled)
            (height, width), (padded_h, padded_w) = self.scaled, self.padded
            bottom, right = padded_h - height, padded_w - width
            flow, trust = _padded(flow, bottom, right, edge=True), _padded(trust, bottom, right, edge=False)
            grid = _resized(flow, trust, size)
            self._on_grid = tuple(torch.as_tensor(v).to(self.device, torch.float32) for v in grid)  # type: ignore[assignment]
        assert self._on_grid is not None
        return self._on_grid


def _resized(flow: Any, trust: Any, size: tuple[int, int]) -> tuple[Any, Any]:
    """Flow (vectors scaled with the grid) and trust area-averaged to `size` (h, w), numpy or tensors."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow, trust
    return resize_flow(flow, size, "area"), resize_planes(trust, size, "area")


def _padded(values: Any, bottom: int, right: int, edge: bool) -> Any:
    """(B, C, H, W) grown by `bottom` rows and `right` columns: edge values repeated, or zeros."""
    if not (bottom or right):
        return values
    if isinstance(values, np.ndarray):
        return np.pad(values, ((0, 0), (0, 0), (0, bottom), (0, right)), mode="edge" if edge else "constant")
    return F.pad(values, (0, right, 0, bottom), mode="replicate") if edge else F.pad(values, (0, right, 0, bottom))


class RememberedPairs(FlowEstimator):
    """A flow estimator that keeps its last `size` pairs: the pixel fuser then
    asks for the very flows latent fusion took (the same source frames, as objects), and each pair is estimated
    once. Holds `size` pairs of (H, W, 2) float32 flows (2 x 8.3 MB a pair at 1080p)."""

    def __init__(self, estimator: FlowEstimator, size: int) -> None:
        self.estimator = estimator
        self.name = estimator.name
        self._pairs: collections.deque[tuple[np.ndarray, np.ndarray, Any]] = collections.deque(maxlen=size)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.estimator(a, b)

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for first, second, flows in self._pairs:
            if first is a and second is b:
                return flows
        flows = self.estimator.pair(a, b)
        self._pairs.append((a, b, flows))
        return flows


class LatentFusion:
    """The latent flow fusion of one stage (see the module docstring). Per pipeline call: `arguments(...)` gives
    the callback keyword arguments, `finish()` keeps the call's last frame for the next call; `reset()` forgets.

    Args:
        family: the model's family (how its latents unpack to a grid). weight: 0..1, how far a trusted latent cell
        moves to the warped previous one. fraction: 0..1, the share of the steps (from the first) that blend.
        device: where the flow and trust are taken to the latent grid (None: `resolve_device`'s choice).
        batch_size: frames per pipeline call; the estimator (DIS) remembers that many pairs, for the pixel fuser to
        reuse.
    """

    def __init__(
        self, family: Family, weight: float, fraction: float, device: str | torch.device | None = None,
        batch_size: int = 1,
    ) -> None:
        from v2v.devices import resolve_device
        from v2v.flow import make_flow_estimator

        self.family = family
        self.weight = weight
        self.fraction = fraction
        self.device = resolve_device(device)
        self.estimator = RememberedPairs(make_flow_estimator("dis"), batch_size)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (the next one starts afresh)."""
        self._last: tuple[int, np.ndarray] | None = None  # index and source of the last frame diffused
        self._latents: dict[int, torch.Tensor] = {}  # its latents (1, C, h, w) float32 per blending step
        self._pending: tuple[int, np.ndarray] | None = None
        self._next: dict[int, torch.Tensor] = {}

    def arguments(
        self,
        images: Sequence[np.ndarray],
        indices: Sequence[int],
        cuts: Sequence[bool],
        scaled: tuple[int, int],
        padded: tuple[int, int],
    ) -> dict[str, Any]:
        """The `callback_on_step_end` arguments of one pipeline call over consecutive source frames `images`
        (RGB uint8, all one size) at clip positions `indices`; `cuts` flags frames that open a new shot. `scaled`
        and `padded` are the (h, w) the frames were scaled to and then padded to for the pipeline."""
        last, self._last = self._last, None  # a failed call leaves nothing to link to
        links: list[_Link | None] = []
        for j, (image, index, cut) in enumerate(zip(images, indices, cuts, strict=True)):
            before = (indices[j - 1], images[j - 1]) if j else last
            linked = before is not None and before[0] == index - 1 and before[1].shape == image.shape and not cut
            links.append(self._link(before[1], image, scaled, padded) if linked else None)  # type: ignore[index]
        if links[0] is None:
            self._latents = {}
        self._pending, self._next = (indices[-1], images[-1]), {}
        callback = self._callback(links, padded)
        return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents"]}

    def finish(self) -> None:
        """The call succeeded: its last frame is what the next call links to."""
        self._last, self._latents = self._pending, self._next
        self._pending, self._next = None, {}

    def _link(
        self, previous: np.ndarray, source: np.ndarray, scaled: tuple[int, int], padded: tuple[int, int]
    ) -> _Link:
        from v2v.consistency.fusion import FusionConfig, _luma, flow_trust
        from v2v.flow.warp import flow_to_planes, flow_to_tensor, images_to_planes
        from v2v.frames import images_to_tensor

        to_previous, from_previous = self.estimator.pair(source, previous)
        with torch.inference_mode():
            if self.device.type == "cpu":  # numpy: torch's threads cost more than the arithmetic on a busy CPU
                flow, flow_back = flow_to_planes(to_previous), flow_to_planes(from_previous)
                luma = _luma(images_to_planes([previous, source]))
            else:
                flow, flow_back = flow_to_tensor(to_previous, self.device), flow_to_tensor(from_previous, self.device)
                luma = _luma(images_to_tensor([previous, source], self.device))
            trust, _ = flow_trust(flow, flow_back, luma[:1], luma[1:], FusionConfig().photometric_tolerance)
        return _Link(flow, trust, tuple(scaled), tuple(padded), self.device)  # type: ignore[arg-type]

    def _callback(self, links: list[_Link | None], padded: tuple[int, int]) -> Callable[..., dict[str, Any]]:
        from v2v.flow import warp_by_flow

        def step(pipe: Any, i: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if i >= math.ceil(self.fraction * pipe.num_timesteps):
                return {}
            latents = tensors["latents"]
            grid = self.family.unpack_latents(pipe, latents, *padded).to(torch.float32, copy=True)
            previous = self._latents.get(i)
            changed = False
            for j, link in enumerate(links):
                if j:
                    previous = grid[j - 1 : j]  # already blended
                if link is not None and previous is not None:
                    flow, trust = link.on_grid(tuple(grid.shape[-2:]))
                    current = grid[j : j + 1]
                    current += self.weight * trust * (warp_by_flow(previous, flow) - current)
                    changed = True
            self._next[i] = grid[-1:].clone()
            if not changed:
                return {}
            return {"latents": self.family.pack_latents(pipe, grid.to(latents.dtype), latents)}

        return step
