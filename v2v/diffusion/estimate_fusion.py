"""Estimate fusion (Light-A-Video's progressive light fusion, on v2v's flow): at every denoising step, each frame's
*estimate of the clean image* moves towards the previous frame's estimate at the same step, warped by the source's
flow where that flow is trusted; the step then goes on from the fused estimate.

At the UNet's output (a forward hook), for an epsilon-predicting UNet and its input x at timestep t (the VP form
every diffusers scheduler hands the UNet, `scale_model_input` applied), with a = alphas_cumprod[t]:

    x0 = (x - sqrt(1 - a) eps) / sqrt(a)
    x0 <- x0 + w_i * trust * (warp(x0_prev, flow t -> t-1) - x0),   w_i = weight * (1 - i / steps)
    eps <- (x - sqrt(a) x0) / sqrt(1 - a)

so any scheduler steps from the fused estimate. The weight fades over the steps (strong while the light is being
laid down, nothing at the end, where the frame's own detail is drawn), as Light-A-Video's fusion hands over
progressively. Classifier-free guidance's copies are each fused towards their own previous copy, so the guided
estimate is fused by the same weight. Which frames link, the flow, the trust and their journey to the latent grid are
latent flow fusion's (`latent_fusion.LatentFusion`, whose bookkeeping this reuses): consecutive clip frames only,
never across a cut; a batch's frames are tied in order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from v2v.diffusion.latent_fusion import LatentFusion, _Link


class EstimateFusion(LatentFusion):
    """Estimate fusion for one stage's pipeline (see the module docstring). Per pipeline call: `hooked(...)` around
    it; `reset()` forgets the previous frame."""

    def __init__(self, pipe: Any, weight: float, device: Any = None, batch_size: int = 1) -> None:
        from v2v.diffusion.registry import Family

        super().__init__(Family(), weight, 1.0, device, batch_size)
        self.pipe = pipe
        self._links: list[_Link | None] = []
        self._step = 0

    def _callback(self, links: list[_Link | None], padded: tuple[int, int]) -> Any:
        self._links, self._step = links, 0
        return None

    @contextlib.contextmanager
    def hooked(self, images: Sequence[np.ndarray], indices: Sequence[int], cuts: Sequence[bool] | None,
               multiple: int, max_side: int | None) -> Iterator[None]:
        """Fuse during one pipeline call over consecutive source frames `images` (RGB uint8) at clip positions
        `indices`, diffused at `max_side` on a grid padded to `multiple`."""
        from v2v.diffusion.stage import fitted_size

        scaled = fitted_size(*images[0].shape[:2], max_side)
        padded = (-(-scaled[0] // multiple) * multiple, -(-scaled[1] // multiple) * multiple)
        self.arguments(images, indices, list(cuts) if cuts is not None else [False] * len(images), scaled, padded)
        handle = self.pipe.unet.register_forward_hook(self._fuse, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
        self.finish()

    def _fuse(self, unet: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        from v2v.flow import warp_by_flow

        step, self._step = self._step, self._step + 1
        eps = output[0] if isinstance(output, tuple) else output.sample
        count = len(self._links)
        sample = (args[0] if args else kwargs["sample"])[:, : eps.shape[1]].float()
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        alpha = float(self.pipe.scheduler.alphas_cumprod[int(round(float(timestep)))])
        x0 = (sample - math.sqrt(1 - alpha) * eps.float()) / math.sqrt(alpha)
        groups, (channels, height, width) = x0.shape[0] // count, x0.shape[1:]
        x0 = x0.view(groups, count, channels, height, width)  # copies (guidance) x frames
        weight = self.weight * (1 - step / max(1, self.pipe.num_timesteps))
        previous = self._latents.get(step)
        changed = False
        for j, link in enumerate(self._links):
            if j:
                previous = x0[:, j - 1]  # already fused
            if link is not None and previous is not None and weight > 0:
                flow, trust = link.on_grid((height, width))
                warped = warp_by_flow(previous.reshape(1, groups * channels, height, width), flow)
                current = x0[:, j]
                current += weight * trust * (warped.view(groups, channels, height, width) - current)
                changed = True
        self._next[step] = x0[:, -1].clone()
        if not changed:
            return output
        fused = ((sample - math.sqrt(alpha) * x0.view_as(sample)) / math.sqrt(1 - alpha)).to(eps.dtype)
        return (fused, *output[1:]) if isinstance(output, tuple) else type(output)(sample=fused)


def fuses(pipe: Any) -> bool:
    """Whether estimate fusion applies to the pipeline: an epsilon-predicting UNet under a scheduler with
    `alphas_cumprod`."""
    config = pipe.scheduler.config
    return config.get("prediction_type", "epsilon") == "epsilon" and hasattr(pipe.scheduler, "alphas_cumprod") and \
        torch.is_tensor(pipe.scheduler.alphas_cumprod)
