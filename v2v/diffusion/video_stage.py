"""`VideoModelStage`: a video diffusion model (a `families.video.VideoDiffusion`) over a clip of any length, as one
streaming stage behind `v2v restyle` (and `v2v inpaint` / `v2v edit` for the families that do those).

How a shot goes through it:

1. **Frames to latents, streamed.** Frames (padded to the family's multiple with repeated edge pixels) go to the
   VAE's encoder as they arrive: the shot's first frame alone, then 4 at a time, the causal cache carried between
   calls (`video_vae.py`). One latent frame comes out per call, normalised as the pipeline does it.
2. **Windows of latent frames** (`WindowChain`): a window is `window` frames (the family's rule, 4k+1 for Wan: k+1
   latent frames) and the next one starts `window - overlap` frames later, a whole number of latent frames. Each
   window is denoised by the family (`VideoDiffusion.denoise`, its pipeline's own loop) with noise drawn per
   *absolute* latent frame (seeded by the seed and the number of the frame the latent frame starts at), so a frame
   gets the same noise whatever the windowing. The overlap's latents are held to the previous window's final latents
   at every step (noised to that step's level), then cross-faded linearly from the previous window's final latents
   to this window's own; continuity lives in latent space, nothing is re-encoded from pixels.
3. **Colour anchor.** Each window's latent statistics (per channel mean and spread) are moved to keep the offset from
   the *source's* statistics that the shot's first window had: a window may follow the footage (a pan into shadow)
   but not drift from the look (`anchor`, 0 to 1). Measured with stub denoisers in
   `tests/test_video_models.py`; the noising alternative cannot help with a drift in the mean (its noise has none).
4. **Latents to frames, streamed**: final latent frames go through the VAE's decoder as they are final (a window's
   frames before its overlap; the rest at the shot's end), and the frames leave cut back to the source's size.

Scene cuts (`v2v.scenes`) end a shot: its last chunk is padded by repeating its last frame (the VAE takes 4k+1
frames), its last window runs, and the next shot starts with empty caches, no held latents and a new anchor. A window
never straddles a cut.

Resume: with a `state_dir`, after each window the stage writes (atomically) what continues the chain: the held
latents, the source latents encoded but not yet denoised, both VAE caches, the anchor, the shot's first frame, the
scene detector's last signature and where output stands. A run handed frames that start past 0 (a resumed
image-sequence output, a segment of a segmented run) continues from the newest window state it can: the result is
the uninterrupted run's, bit for bit. The chain is sequential within a shot; segments therefore need the state the
previous segment left (a local segmented run, in order), and a stage with no state for the frames it is handed
refuses in one line rather than start a shot in the middle. Without a state folder (`v2v preview`, the Python API's
default) a run that starts mid-clip starts a shot there: its context is then declared inexact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from v2v.diffusion.config import RestyleConfig
from v2v.errors import InputError, ModelError, UsageError, require
from v2v.frames import Frame, images_to_tensor, tensor_to_images

log = logging.getLogger(__name__)

# window states are kept on disk while they are at most this many reaches (`context.before`) behind the newest: a
# resume picks the newest one the writer, or the segment, had not passed
STATES_KEPT_REACHES = 3


def noise_seed(seed: int, frame: int) -> int:
    """The noise seed of the latent frame that starts at clip frame `frame`."""
    return ((seed & 0x7FFFFFFF) << 32 | (frame & 0xFFFFFFFF)) & 0x7FFFFFFFFFFFFFFF


class WindowChain:
    """Windows of `size` latent frames overlapping by `overlap`, over one shot's latent frames, as they arrive.

    `denoise(clean, start, hold)` gives a window's final latents (1, C, T, h, w) from its clean latents, the shot's
    latent index of its first frame, and the previous window's final latents over the overlap (None for the first).
    `push` takes one latent frame and returns the latent frames that became final (in order); `finish` ends the shot.
    """

    def __init__(self, size: int, overlap: int, denoise: Callable[..., Any], anchor: float = 1.0,
                 crossfade: bool = True) -> None:  # fmt: skip
        if not 0 <= overlap < size:
            raise ValueError(f"overlap {overlap} must be in [0, {size})")
        self.size, self.overlap, self.denoise = size, overlap, denoise
        self.anchor_weight, self.crossfade = anchor, crossfade
        self.reset()

    def reset(self) -> None:
        self.clean: list[Any] = []  # clean latent frames from `start` on, not final yet
        self.start = 0  # shot latent index of clean[0]
        self.tail: Any = None  # final latents of the previous window over clean[:overlap]
        self.anchor: tuple[Any, Any] | None = None  # the shot's first window: (mean offset, spread ratio)
        self.windows = 0

    def push(self, latent: Any) -> list[Any]:
        self.clean.append(latent)
        return self._window(last=False) if len(self.clean) == self.size else []

    def finish(self) -> list[Any]:
        held = 0 if self.tail is None else self.tail.shape[2]
        if len(self.clean) > held:
            return self._window(last=True)
        finals = [] if self.tail is None else list(self.tail.split(1, dim=2))
        self.reset()
        return finals

    def _window(self, last: bool) -> list[Any]:
        import torch

        clean = torch.cat(self.clean, dim=2)
        out = self.denoise(clean, self.start, self.tail)
        out = self._anchored(out, clean)
        if self.tail is not None and self.crossfade:  # linear from the previous window's latents to this one's
            held = self.tail.shape[2]
            weights = torch.arange(1, held + 1, dtype=out.dtype, device=out.device) / (held + 1)
            weights = weights.view(1, 1, held, 1, 1)
            out = torch.cat([self.tail * (1 - weights) + out[:, :, :held] * weights, out[:, :, held:]], dim=2)
        self.windows += 1
        if last:
            self.reset()
            return list(out.split(1, dim=2))
        keep = self.size - self.overlap
        self.tail = out[:, :, keep:].clone() if self.overlap else None
        self.clean = self.clean[keep:]
        self.start += keep
        return list(out[:, :, :keep].split(1, dim=2))

    def _anchored(self, out: Any, clean: Any) -> Any:
        """The window's latents with the per-channel offset and spread from the source that the shot's first window
        had (an AdaIN relative to the source), by `anchor_weight`."""
        if self.anchor_weight <= 0:
            return out
        dims = (0, 2, 3, 4)
        out_mean, out_std = out.mean(dims, keepdim=True), out.std(dims, keepdim=True).clamp_min(1e-6)
        clean_mean, clean_std = clean.mean(dims, keepdim=True), clean.std(dims, keepdim=True).clamp_min(1e-6)
        if self.anchor is None:
            self.anchor = (out_mean - clean_mean, out_std / clean_std)
            return out
        offset, ratio = self.anchor
        moved = (out - out_mean) / out_std * (clean_std * ratio) + (clean_mean + offset)
        return out + self.anchor_weight * (moved - out)

    def state(self) -> dict[str, Any]:
        return {"clean": [c.cpu() for c in self.clean], "start": self.start, "windows": self.windows,
                "tail": None if self.tail is None else self.tail.cpu(),
                "anchor": None if self.anchor is None else tuple(a.cpu() for a in self.anchor)}  # fmt: skip

    def load_state(self, state: dict[str, Any], device: Any) -> None:
        self.clean = [c.to(device) for c in state["clean"]]
        self.start, self.windows = state["start"], state["windows"]
        self.tail = None if state["tail"] is None else state["tail"].to(device)
        self.anchor = None if state["anchor"] is None else tuple(a.to(device) for a in state["anchor"])


@dataclasses.dataclass
class _Shot:
    """Where the current shot stands: its first clip frame, frames fed to the encoder, the frames of the chunk being
    gathered, the frames waiting for their output (fed or not), and the scene detector's last signature."""

    first: int = 0
    encoded: int = 0  # frames of the shot the encoder has taken
    chunk: list[np.ndarray] = dataclasses.field(default_factory=list)
    pending: deque[Frame] = dataclasses.field(default_factory=deque)
    signature: Any = None


class VideoModelStage:
    """A pipeline stage (see `v2v.pipeline.Stage`): a video diffusion family over windows of frames (module
    docstring). One output frame per input frame, same instants; sizes as the source's."""

    one_to_one = True

    def __init__(self, config: RestyleConfig, state_dir: str | os.PathLike[str] | None = None) -> None:
        require("diffusers", "diffusion")
        from v2v.devices import parse_dtype, resolve_device
        from v2v.diffusion import models, registry

        # 1. The family and its settings; refusals before anything big loads.
        family, info = registry.detect(config.check().model, config.model_config, config.kind,
                                       motion_adapter=config.motion_adapter)  # fmt: skip
        if not getattr(family, "video", False):
            raise UsageError(f"{family.title} is an image model; VideoModelStage takes a video family")
        self.family: Any = family
        self.kind = family.kind(config.kind, len(config.controlnets))
        config = config.with_defaults(family.defaults).check()
        self.window = config.window or family.window
        self.overlap = family.overlap if config.window_overlap is None else config.window_overlap
        if config.window and config.window_overlap is None:  # a window smaller than the default overlap's
            self.overlap = min(self.overlap, (self.window - 1) // 2 // family.temporal * family.temporal)
        family.check_window(self.window, self.overlap)
        _refuse_image_options(config, family)
        family.refuse(config)
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = parse_dtype(config.dtype) if config.dtype else family.dtype(self.device)
        # 2. The pipeline, then what modifies it.
        self.pipe = family.load_video(info, self.kind, config, device=self.device, dtype=self.dtype)
        scheduler = config.scheduler or family.defaults.scheduler
        if scheduler:
            models.set_scheduler(self.pipe, scheduler)
        if config.lora:
            from v2v.diffusion.loras import load_loras, parse_loras

            load_loras(self.pipe, family, parse_loras(config.lora), config.model)
        if config.vae_tiling:  # the streamed VAE then keeps a causal cache per tile
            self.pipe.vae.enable_tiling()
        # 3. The prompt, encoded once for the run; with offload the text encoder then leaves the device.
        import torch

        self.guided = float(config.guidance) > 1.0
        with torch.inference_mode():
            self.embeds = family.encode_prompt(self.pipe, config.text, config.negative_prompt, self.guided)
        if config.offload == "model" and getattr(self.pipe, "text_encoder", None) is not None:
            self.pipe.text_encoder.to("cpu")  # the largest part of Wan (UMT5-XXL); it is not needed again
        self.vae = family.streaming_vae(self.pipe)
        self.multiple = family.multiple(self.pipe)
        size = (self.window - 1) // family.temporal + 1
        self.chain = WindowChain(size, self.overlap // family.temporal, self._denoise, anchor=config.anchor)
        if not family.streams:  # a VAE that cannot stream (LTX): windows of frames encoded and decoded whole
            from v2v.diffusion.video_windows import WholeWindows

            self.chain = WholeWindows(self, self.chain)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._timed = False
        self._shot_first = self._skip_below = self._resume_encoded = 0

    @property
    def context(self) -> Any:
        """The window chain is sequential within a shot. With a state folder a run may start at any frame at most
        `before` frames before the first it must give (it continues from a saved window state there) and needs
        `after` frames past the last to finish the windows that reach it: exact, but a segment redoes about two
        windows, so runs are segmented only when asked (`--resume`). Without a state folder a run that starts mid-shot
        starts a shot there: inexact."""
        from v2v.pipeline import Context

        reach = self.window + 2 * self.family.temporal
        return Context(before=reach, after=reach, exact=self.state_dir is not None, by_default=False)

    # --- the frames ---------------------------------------------------------------------------------------

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        from v2v.scenes import signature, signatures_cut

        shot: _Shot | None = None
        for frame in frames:
            if shot is None:
                shot = self._begin(frame)
            if frame.index < self._skip_below:  # a resumed run: output before the saved state's
                continue
            if frame.index < self._resume_encoded:  # a resumed run: encoded before the stop, output still to come
                shot.pending.append(frame)
                continue
            current = signature(frame.image)
            if shot.signature is not None and signatures_cut(shot.signature, current):
                yield from self._end_shot(shot)
                shot = self._new_shot(frame.index)
                self._save_state(shot)  # a state at every shot's start: short shots have no window to save after
            shot.signature = current
            yield from self._feed(shot, frame)
        if shot is not None:
            yield from self._end_shot(shot)

    def _begin(self, frame: Frame) -> _Shot:
        """The shot state for a run whose first frame is `frame`: fresh at frame 0, else a saved window state."""
        self._skip_below = self._resume_encoded = 0
        if frame.index == 0 or self.state_dir is None:  # without states a run starting mid-clip starts a shot there
            self._clear_states()
            return self._new_shot(frame.index)
        return self._restore(frame.index)

    def _new_shot(self, first: int) -> _Shot:
        self.vae.reset()
        self.chain.reset()
        self._shot_first = first
        return _Shot(first=first)

    def _feed(self, shot: _Shot, frame: Frame) -> Iterator[Frame]:
        """One frame into the shot: to the encoder when its chunk is full, and out come the frames whose window
        finished (the window's state saved first)."""
        if not self.family.streams:
            out = self.chain.feed(shot, frame)
            if out:
                self._save_state(shot)
            yield from out
            return
        shot.pending.append(frame)
        shot.chunk.append(frame.image)
        if len(shot.chunk) == (1 if shot.encoded == 0 else self.family.temporal):
            finals = self.chain.push(self._encode(shot))
            if finals:
                out = self._decoded(shot, finals)
                self._save_state(shot)
                yield from out

    def _end_shot(self, shot: _Shot) -> Iterator[Frame]:
        if not self.family.streams:
            yield from self.chain.end(shot)
            return
        if shot.chunk:  # the VAE takes 4k+1 frames: the last frame repeated (its outputs are dropped)
            shot.chunk += [shot.chunk[-1]] * ((1 if shot.encoded == 0 else self.family.temporal) - len(shot.chunk))
            finals = self.chain.push(self._encode(shot))
        else:
            finals = []
        finals += self.chain.finish()
        yield from self._decoded(shot, finals)
        shot.pending.clear()

    def _encode(self, shot: _Shot) -> Any:
        """The gathered chunk through the streaming encoder: one normalised latent frame."""
        import torch

        with torch.inference_mode():
            frames = self._padded(shot.chunk)  # (T, 3, H, W) in [0, 1]
            video = (frames * 2.0 - 1.0).permute(1, 0, 2, 3).unsqueeze(0).to(self.pipe.vae.dtype)
            latent = self.family.normalise(self.pipe, self.vae.encode(video))
        shot.encoded += len(shot.chunk)
        shot.chunk = []
        return latent.to(torch.float32)

    def _padded(self, images: list[np.ndarray]) -> Any:
        import torch
        import torch.nn.functional as F

        frames = images_to_tensor(images, self.device, torch.float32)
        height, width = frames.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if (pad_h or pad_w) and (height, width) not in getattr(self, "_told", set()):
            self._told = {(height, width)}
            log.info("frames of %dx%d are padded to %dx%d for %s (multiples of %d) and cut back after", width, height,
                     width + pad_w, height + pad_h, self.family.title, self.multiple)  # fmt: skip
        return F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else frames

    def _decoded(self, shot: _Shot, finals: list[Any]) -> list[Frame]:
        """Final latent frames through the streaming decoder, paired with the frames waiting for them (frames past
        the shot's real ones, the padding, are dropped)."""
        import torch

        if not finals:
            return []
        with torch.inference_mode():
            video = self.vae.decode(self.family.denormalise(self.pipe, torch.cat(finals, dim=2)))
        return self._paired(shot, (video[0].permute(1, 0, 2, 3).float() / 2 + 0.5).clamp(0, 1))

    def _paired(self, shot: _Shot, images: Any) -> list[Frame]:
        """(T, 3, H, W) pictures in [0, 1] paired with the frames waiting for them, cut back to their size."""
        height, width = shot.pending[0].image.shape[:2] if shot.pending else (0, 0)
        out = []
        for image in tensor_to_images(images[..., :height, :width]):
            if not shot.pending:
                break
            frame = shot.pending.popleft()
            out.append(frame.with_image(image))
        return out

    def _denoise(self, clean: Any, start: int, hold: Any, noise: Any = None) -> Any:
        """One window through the family, with the noise of its absolute latent frames (the stub tests swap this)."""
        import torch

        began = time.perf_counter()
        if noise is None:
            noise = self.noise(self._shot_first, start, clean.shape)
        with torch.inference_mode():
            out = self.family.denoise(self.pipe, clean, noise, self.embeds, steps=int(self.config.steps),
                                      strength=float(self.config.strength), guidance=float(self.config.guidance),
                                      hold=hold)  # fmt: skip
        if not self._timed:
            self._timed = True
            log.info("%s: first window of %d latent frames in %.1f s", self.family.title, clean.shape[2],
                     time.perf_counter() - began)  # fmt: skip
        return out

    def noise(self, shot_first: int, start: int, shape: tuple[int, ...]) -> Any:
        """(1, C, T, h, w) float32 noise for the shot's latent frames start..start+T-1, each drawn from its own
        generator seeded by the clip frame it starts at (a latent frame j > 0 covers frames 4j-3..4j of the shot)."""
        temporal = self.family.temporal
        frames = [shot_first + (0 if latent == 0 else temporal * latent - temporal + 1)
                  for latent in range(start, start + shape[2])]  # fmt: skip
        return self.noise_at(frames, shape)

    def noise_at(self, frames: list[int], shape: tuple[int, ...]) -> Any:
        """(1, C, len(frames), h, w) float32 noise, latent frame i drawn from the generator of clip frame
        `frames[i]` (the frame it starts at)."""
        import torch

        per_frame, parts = (1, shape[1], 1, *shape[3:]), []
        for frame in frames:
            generator = torch.Generator("cpu").manual_seed(noise_seed(int(self.config.seed), frame))
            parts.append(torch.randn(per_frame, generator=generator, dtype=torch.float32))
        return torch.cat(parts, dim=2).to(self.device)

    # --- resume -------------------------------------------------------------------------------------------

    def _state_files(self) -> list[Path]:
        if self.state_dir is None or not self.state_dir.is_dir():
            return []
        return sorted(self.state_dir.glob("window-*.pt"))

    def _clear_states(self) -> None:
        for path in self._state_files():
            path.unlink()

    def _save_state(self, shot: _Shot) -> None:
        """After a window: what continues the chain, written to a temporary name and renamed (a crash leaves the
        previous states whole); those far behind it removed."""
        if self.state_dir is None:
            return
        import torch

        emitted = shot.pending[0].index if shot.pending else shot.first + shot.encoded
        state = {
            "options": self._identity(), "emitted": emitted, "first": shot.first, "encoded": shot.encoded,
            "signature": shot.signature, "vae": self.vae.state(), "chain": self.chain.state(),
        }  # fmt: skip
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"window-{emitted:09d}.pt"
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, path)
        for old in self._state_files():
            if _emitted(old) < emitted - STATES_KEPT_REACHES * self.context.before:
                old.unlink()

    def _identity(self) -> dict[str, Any]:
        """What a saved state must have been made with to continue this run."""
        return {"config": repr(self.config), "window": self.window, "overlap": self.overlap}

    def _restore(self, first: int) -> _Shot:
        """The newest saved state whose output starts at or after `first` and at most `before` frames later (what a
        resumed writer or a segment still needs from the stage), loaded; frames before its output are skipped."""
        import torch

        reach = self.context.before
        for path in reversed(self._state_files()):
            emitted = _emitted(path)
            if first <= emitted <= first + reach:
                state = torch.load(path, weights_only=False)
                if state["options"] != self._identity():
                    raise UsageError(f"the window state in {self.state_dir} was saved by a run with other options; "
                                     "remove it to start over")  # fmt: skip
                self.vae.load_state(state["vae"], self.device)
                self.chain.load_state(state["chain"], self.device)
                shot = _Shot(first=state["first"], encoded=state["encoded"], signature=state["signature"])
                self._shot_first = shot.first
                self._skip_below = emitted
                self._resume_encoded = shot.first + shot.encoded
                log.info("continuing from the window state saved at frame %d (%s)", emitted, path.name)
                return shot
        where = f"in {self.state_dir}" if self.state_dir is not None else "(no state folder)"
        raise InputError(f"{self.family.title} windows are sequential within a shot: a run starting at frame {first} "
                         f"needs the window state a run up to there saved {where}, and there is none; run the clip "
                         "in one pass, or segments in order in one place (not Ray)")  # fmt: skip


def _emitted(path: Path) -> int:
    """The first frame still to give of the state saved at `path`."""
    return int(path.stem.split("-")[1])


def _refuse_image_options(config: RestyleConfig, family: Any) -> None:
    """One line for an option of the image stages that means nothing for a video family."""
    defaults = RestyleConfig()
    if config.ip_adapter:
        raise ModelError.naming("{title} models take no IP-Adapter; drop {ip_adapter}", title=family.title)
    if config.reference and not getattr(family, "takes_reference", False):
        raise UsageError.naming("{title} models take no reference image; drop {reference} (Wan VACE takes one)",
                                title=family.title)  # fmt: skip
    for name in ("keyframe_every", "batch_size", "bank_tokens", "max_side", "true_cfg", "temporal", "fusion",
                 "latent_fusion", "latent_fusion_steps", "attention_slicing"):
        if getattr(config, name) != getattr(defaults, name):
            raise UsageError.naming("{" + name + "} is for image models; {title} denoises windows of frames together "
                                    "(see {window})", title=family.title)  # fmt: skip

