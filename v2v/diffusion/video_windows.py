"""Windows encoded and decoded whole, for a video family whose VAE cannot stream (LTX-Video: its decoder is not
causal and its encoder has no cache to carry), in place of `video_stage.WindowChain` inside `VideoModelStage`.

A window is `window` frames (the family's rule, 8k+1 for LTX). Its source frames are encoded as one clip (the first
frame alone, then `temporal` frames per latent frame), denoised, and decoded as one clip. The next window starts at
the frame `window - 1 - overlap` later, the last frame of one of this window's latent frames, so its latent frames
1, 2, ... cover exactly the frames of this window's last `overlap / temporal` latent frames: those final latents
enter the next window as its held latents (the family's conditions: LTX's with a strength), and only its first latent
frame, that lone frame, is new. Windows therefore share `overlap + 1` frames, and those are cross-faded in pixels,
linearly from this window's decoding to the next one's (both decodings are whole, so nothing else joins them).

Memory is one window of frames and latents, as with the streamed VAE; the decoder sees one window at a time, so the
VAE's temporal reach across a join is the overlap's. The colour anchor is `WindowChain`'s. Resume: the window state
holds the held latents, the decoded overlap frames, the next window's source frames taken so far, the anchor and
where the next window starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from v2v.frames import Frame


class WholeWindows:
    """The windows of a shot, fed frame by frame (`feed`, `end`), each encoded and decoded whole (module docstring).
    `stage` is the `VideoModelStage`, `chain` its `WindowChain`, whose held latents (`tail`), colour anchor and window
    count this keeps (its latent-frame windows are not used)."""

    def __init__(self, stage: Any, chain: Any) -> None:
        self.stage, self.chain, self.denoise = stage, chain, chain.denoise
        self.stride = stage.window - 1 - stage.overlap  # frames from one window's start to the next's
        self.reset()

    def reset(self) -> None:
        self.chain.reset()
        self.images: list[np.ndarray] = []  # the current window's source frames so far
        self.first = 0  # the shot's frame the current window starts at
        self.faded: Any = None  # the previous window's decoded frames over the shared ones, (overlap + 1, 3, H, W)

    def feed(self, shot: Any, frame: Frame) -> list[Frame]:
        """The frames a full window gives (none until it is full)."""
        shot.pending.append(frame)
        self.images.append(frame.image)
        shot.encoded += 1  # frames taken: a resumed run is handed them again and only waits for their output
        return self._window(shot, last=False) if len(self.images) == self.stage.window else []

    def end(self, shot: Any) -> list[Frame]:
        """The shot's last frames: a last window, shorter (padded to the frame rule by repeating the last frame), or
        the previous window's decoding when only the shared frames are left."""
        if self.faded is not None and len(self.images) <= len(self.faded):
            out = self.stage._paired(shot, self.faded[: len(self.images)])
        else:
            out = self._window(shot, last=True) if self.images else []
        shot.pending.clear()
        self.reset()
        return out

    def _window(self, shot: Any, last: bool) -> list[Frame]:
        import torch

        stage, family, pipe = self.stage, self.stage.family, self.stage.pipe
        temporal, count = family.temporal, len(self.images)
        size = (count - 1 + temporal - 1) // temporal * temporal + 1
        images = self.images + [self.images[-1]] * (size - count)
        with torch.inference_mode():
            frames = stage._padded(images)  # (size, 3, H, W) in [0, 1]
            video = (frames * 2.0 - 1.0).permute(1, 0, 2, 3).unsqueeze(0).to(pipe.vae.dtype)
            clean = family.normalise(pipe, stage.vae.encode(video)).to(torch.float32)
        first = shot.first + self.first
        starts = [first] + [first + temporal * j - temporal + 1 for j in range(1, clean.shape[2])]
        chain = self.chain
        out = self.denoise(clean, 0, chain.tail, noise=stage.noise_at(starts, clean.shape))
        out = chain._anchored(out, clean)
        with torch.inference_mode():
            decoded = stage.vae.decode(family.denormalise(pipe, out))
        pictures = (decoded[0].permute(1, 0, 2, 3).float() / 2 + 0.5).clamp(0, 1)
        if self.faded is not None:  # the shared frames, linearly from the previous window's decoding to this one's
            shared = len(self.faded)
            weights = torch.arange(1, shared + 1, dtype=pictures.dtype, device=pictures.device) / (shared + 1)
            weights = weights.view(shared, 1, 1, 1)
            pictures[:shared] = self.faded * (1 - weights) + pictures[:shared] * weights
        chain.windows += 1
        if last:
            return stage._paired(shot, pictures[:count])
        keep = self.stride // temporal  # the next window's first frame ends this window's latent frame `keep`
        chain.tail = out[:, :, keep + 1 :].clone() if chain.overlap else None
        self.faded = pictures[self.stride :].clone()
        self.images = self.images[self.stride :]
        self.first += self.stride
        return stage._paired(shot, pictures[: self.stride])

    def state(self) -> dict[str, Any]:
        return {**self.chain.state(), "images": list(self.images), "first": self.first,
                "faded": None if self.faded is None else self.faded.cpu()}  # fmt: skip

    def load_state(self, state: dict[str, Any], device: Any) -> None:
        self.chain.load_state(state, device)
        self.images, self.first = list(state["images"]), state["first"]
        self.faded = None if state["faded"] is None else state["faded"].to(device)
