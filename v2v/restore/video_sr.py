"""`VideoSRStage`: BasicVSR x4 over a stream of frames, in windows, with bounded memory.

BasicVSR propagates features forward (first frame to last) and backward (last to first) over the whole
sequence, which does not stream. The stage splits it:

- **Forward branch: carried exactly.** The forward feature of frame t depends on frames <= t only, so the
  stage keeps the last emitted frame's feature and continues from it in the next window: no recomputation,
  no approximation.
- **Backward branch: windows.** The backward feature of frame t depends on every later frame of the shot.
  The stage runs it over a window of `window` frames and keeps the first `window - context.after` of them;
  the last `context.after` frames are there only as look-ahead and start the next window. Far frames reach
  frame t through many warps and trunks, so their weight fades, but slowly where the picture stands still
  (measured on a still talking head, carphone at 32x24: 36.5 dB from the whole-shot run with 12 frames of
  look-ahead, 38.3 with 16, 41.3 with 24, 48.3 with 32; another crop of it gave 39.3 with 24; on moving
  footage, bikes, over 100 dB with 10). With the default `LOOKAHEAD` of 32 the windowed output equals the
  whole-shot run to 40 dB or more (tests/test_restore_basicvsr.py); a shot that stands still for longer may
  carry information further still.
- **Scene cuts** (`v2v.scenes.is_cut`) and size changes end the shot: its frames are finished without
  looking past the cut, and the next shot starts from zero features, as a separate clip would. Propagation
  across a cut would carry the old shot's texture into the new one.
- **Window size** is chosen once per frame size from the memory available (CPU: MemAvailable; CUDA: free
  plus torch's cached memory): it holds the window's features and flows plus one frame's reconstruction.
  Memory is flat in the clip's length: the stage holds at most `window` input frames.

Segmented runs (resume, Ray) start each segment without the carried state, so the stage declares the
look-ahead on both sides as its warm-up, and that a segment only approximates a single pass:
`context = Context(before=LOOKAHEAD, after=LOOKAHEAD, exact=False)`.

Precision (`dtype="auto"`, `BasicVSR.traits.dtype`): fp16 on CUDA for the trunks and reconstruction; bf16 on
CPUs with native bf16 arithmetic (measured here: 1.7x faster than fp32, and 55 dB from the fp32 output), else
fp32. SPyNet and warping stay in float32 whatever the dtype: a half-precision sampling grid is off by pixels
on wide frames.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from v2v.devices import available_memory, resolve_device, tune_for_fixed_shapes
from v2v.errors import ModelError, UsageError
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.pipeline import Context
from v2v.restore.registry import RestoreModel, lookup
from v2v.scenes import is_cut

if TYPE_CHECKING:
    import torch

    from v2v.restore.basicvsr import BasicVSR

log = logging.getLogger(__name__)

LOOKAHEAD = 32  # frames of look-ahead for the backward branch (see the module doc and the tests)
MAX_WINDOW = 128  # more buys little: the look-ahead's share of the backward branch is LOOKAHEAD / (window - LOOKAHEAD)
_CPU_SHARE, _CUDA_SHARE = 0.4, 0.7  # of the available memory a stage may plan to use


def _resolve_model(model: str | RestoreModel) -> tuple[str, BasicVSR]:
    from v2v.restore import basicvsr

    if isinstance(model, RestoreModel):
        return model.name, model.load()
    if os.path.isfile(model):
        return os.path.basename(model), basicvsr.load_file(model)
    named = lookup(model, task="video-sr")
    return named.name, named.load()


class VideoSRStage:
    """Upscale x4 with BasicVSR, using the neighbouring frames; timing kept (one output per input frame).

    Args:
        model: a video-sr model name (`basicvsr-vimeo90k-bi`, ...), a RestoreModel, or a BasicVSR .pth file.
        device: cpu, cuda, cuda:N (default: cuda when available). dtype: auto (fp16 on CUDA, bf16 on CPUs with
            native bf16, else fp32), fp32, fp16 or bf16.
        window: frames per window including the look-ahead; None chooses it from memory at the first frame.
        batch_size: frames reconstructed (upsampled) at once.
        lookahead: frames after a window's last kept frame that its backward branch sees.
        tile: spatial tiles are not supported for video models: anything but None or 0 is a UsageError.
    """

    one_to_one = True

    def __init__(self, model: str | RestoreModel, *, device: str | None = None, dtype: str = "auto",
                 window: int | None = None, batch_size: int = 1, lookahead: int = LOOKAHEAD,
                 tile: int | None = None) -> None:

        # 1. Check the options.
        check_tile(model.name if isinstance(model, RestoreModel) else str(model), tile)
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        if lookahead < 0:
            raise UsageError(f"look-ahead must be >= 0 frames, got {lookahead}")
        if window is not None and window <= lookahead:
            raise UsageError(f"the window ({window} frames) must be longer than the look-ahead ({lookahead})")
        self.device = resolve_device(device)
        tune_for_fixed_shapes(self.device)  # one frame (or tile) shape a clip
        # 2. Load and place the network (SPyNet stays float32).
        self.name, network = _resolve_model(model)
        self.dtype = network.traits.dtype(self.device, dtype)
        self.network = network.to(self.device, self.dtype).eval()
        self.network.spynet.float()
        self.scale = network.traits.scale
        self.lookahead, self.batch_size = lookahead, batch_size
        # the forward branch is carried without bound, the backward one sees `lookahead` frames: not exact
        self.context = Context(before=lookahead, after=lookahead, exact=False)
        self.window = window
        self._windows: dict[tuple[int, int], int] = {}
        # what the stage did, for tests and logs
        self.windows_run = 0
        self.max_buffered = 0
        log.info("video SR: %s x%d on %s in %s", self.name, self.scale, self.device, self.dtype)

    # -- the window -------------------------------------------------------------------------------------

    def bytes_per_frame(self, height: int, width: int) -> tuple[int, int]:
        """(bytes per frame held in a window, bytes of one reconstruction batch) for low-res frames HxW."""
        import torch

        item = torch.empty((), dtype=self.dtype).element_size()
        pixels = height * width
        held = pixels * (3 + item * (self.network.channels + 3) + 4 * (2 + 2))  # uint8 frame, features, two flows
        # reconstruction: 4C channels at 1x, 256 at 2x, 64 at 4x (and copies); SPyNet's 64-channel level
        transient = pixels * 4 * (self.network.channels * 6 + 256 * 4 * 2 + 64 * 16 * 3) * self.batch_size
        return held, transient

    def window_for(self, height: int, width: int) -> int:
        """Frames per window for low-res frames of HxW: as asked, else from memory (chosen once per size)."""
        if self.window is not None:
            return self.window
        key = (height, width)
        if key not in self._windows:
            share = _CUDA_SHARE if self.device.type == "cuda" else _CPU_SHARE
            budget = available_memory(self.device) * share
            held, transient = self.bytes_per_frame(height, width)
            fits = int((budget - transient) // held)
            if fits <= self.lookahead:
                need = (transient + (self.lookahead + 1) * held) / 2**30
                raise ModelError(
                    f"{self.name}: {width}x{height} frames need about {need:.1f} GB for a window of "
                    f"{self.lookahead + 1} frames, but {budget / 2**30:.1f} GB are available on {self.device}; "
                    "downscale the input or use an image SR model"
                )
            self._windows[key] = min(MAX_WINDOW, fits)
            log.info("video SR: windows of %d frames for %dx%d (%.0f MB each)", self._windows[key], width, height,
                     self._windows[key] * held / 2**20)
        return self._windows[key]

    # -- the stage --------------------------------------------------------------------------------------

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        pending: list[Frame] = []
        carried: tuple[torch.Tensor, torch.Tensor] | None = None  # last emitted (frame, forward feature)
        for frame in frames:
            if pending and (frame.image.shape != pending[-1].image.shape
                            or is_cut(pending[-1].image, frame.image)):  # fmt: skip
                yield from self._run(pending, len(pending), carried)  # finish the shot
                pending, carried = [], None
            pending.append(frame)
            self.max_buffered = max(self.max_buffered, len(pending))
            if len(pending) >= self.window_for(frame.height, frame.width):
                keep = len(pending) - self.lookahead
                carried = yield from self._run(pending, keep, carried)
                pending = pending[keep:]
        if pending:
            yield from self._run(pending, len(pending), carried)

    def _run(self, window: list[Frame], keep: int,
             carried: tuple[torch.Tensor, torch.Tensor] | None) -> Iterator[Frame]:
        """BasicVSR over `window`; yields its first `keep` frames upscaled and returns the carried state."""
        import torch

        net = self.network
        self.windows_run += 1
        # (inference mode around the computing only: a generator's `with` would stay on while it is suspended)
        with torch.inference_mode():
            x = images_to_tensor([frame.image for frame in window], self.device, self.dtype)
            # 1. Flows: neighbours inside the window, and from the first frame back to the carried one.
            sequence = x if carried is None else torch.cat([carried[0], x])
            to_next, to_previous = net.flows(sequence)
            if carried is not None:
                to_next = to_next[1:]
            # 2. Backward branch over the whole window (look-ahead included).
            backward = net.backward_features(x, to_next)
        # 3. Forward branch, carried from the previous window, and reconstruction of the kept frames.
        feature = None if carried is None else carried[1]
        shift = 0 if carried is None else 1
        for start in range(0, keep, self.batch_size):
            stop = min(keep, start + self.batch_size)
            with torch.inference_mode():
                forward = []
                for i in range(start, stop):
                    flow = to_previous[i + shift - 1 : i + shift] if feature is not None else None
                    feature = net.forward_step(x[i : i + 1], feature, flow)
                    forward.append(feature)
                images = tensor_to_images(net.reconstruct(x[start:stop], backward[start:stop], torch.cat(forward)))
            for frame, image in zip(window[start:stop], images, strict=True):
                yield frame.with_image(image)
        assert feature is not None
        return x[keep - 1 : keep].clone(), feature


def check_tile(model: str, tile: int | None) -> None:
    """UsageError (one line) for a tile size given to a video model, before anything loads."""
    if tile:
        raise UsageError.naming("{model} is a video model: it runs whole frames in temporal windows sized to fit "
                                "memory, and {tile} is not supported; drop {tile}", model=model)


