"""A mask tracked through the clip by SAM 2 from a click or a box on one frame (`--point X,Y@N`, `--box X0,Y0,X1,Y1@N`,
`--mask point:X,Y@N`), through transformers' `Sam2VideoModel` and `Sam2VideoProcessor`.

The model comes from a local folder or the user's Hugging Face cache (`v2v.diffusion.models.resolve_path`: default
`facebook/sam2.1-hiera-tiny`). The prompt is given on the anchor frame N; SAM 2 segments it there, tracks it
backward from N to the clip's first frame, then forward from N to the end: the order of transformers' own
predictor run as `propagate_in_video_iterator(reverse=True)` then forward, whose masks these equal (the forward
pass starts with the backward pass's memories of the frames just before N, as there).

Frames stream, and memory stays bounded: SAM 2 reads, for each frame, the memories of the prompted frame, of the
`num_maskmem - 1` frames before it (in the direction of travel) and the object pointers of up to
`max_object_pointers_in_encoder` frames; the inference session would keep every frame and every output, so after
each frame `TrackedMask` drops what no later frame reads (frames further than that window from both the current
frame and the anchor). Backward from N the frames are decoded in chunks in reverse from the run's `SourceFrames`
(as `v2v.inpaint.propagate` does), and the backward masks wait as PNGs in a scratch folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from v2v.errors import InputError
from v2v.frames import Frame
from v2v.inpaint.masks import given_clip, read_mask_image
from v2v.inpaint.propagate import frames_backward
from v2v.io.source_frames import SourceFrames
from v2v.pipeline import Context

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
OBJECT = 1  # the one object's id in the session


@dataclasses.dataclass(frozen=True)
class TrackPrompt:
    """What the user pointed at on the clip's frame `frame`: a point (x, y) or a box (x0, y0, x1, y1), in pixels."""

    frame: int
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None

    def check(self, width: int, height: int, frames: int) -> None:
        """One line (InputError) for a point or box outside the frame, or a frame past the clip."""
        if not 0 <= self.frame < frames:
            raise InputError(f"the prompt's frame @{self.frame} is past the clip (frames 0 to {frames - 1})")
        if self.point is not None:
            x, y = self.point
            if not (0 <= x < width and 0 <= y < height):
                raise InputError(f"point {x:g},{y:g} is outside the {width}x{height} frame (x 0 to {width - 1}, "
                                 f"y 0 to {height - 1})")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise InputError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is not inside the {width}x{height} frame with "
                                 "x0 < x1 and y0 < y1")


def sam2_folder(model: str) -> Path:
    """The folder of a SAM 2 video model: a local path, or a hub id in the Hugging Face cache (downloaded unless
    offline); one line (ModelError) saying what was looked for and how to get it otherwise."""
    from v2v.diffusion.models import resolve_path

    return resolve_path(model, "SAM 2 model", instead="pass --sam-model a folder holding a Sam2VideoModel")


def load_sam2(model: str, device: str | None = None) -> tuple[Any, Any]:
    """(Sam2VideoModel in eval mode, Sam2VideoProcessor) from a local folder or the Hugging Face cache."""
    from v2v.devices import resolve_device
    from v2v.errors import require

    require("transformers", "diffusion")
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    folder = sam2_folder(model)
    network = Sam2VideoModel.from_pretrained(folder, local_files_only=True).to(resolve_device(device)).eval()
    return network, Sam2VideoProcessor.from_pretrained(folder, local_files_only=True)


class TrackedMask:
    """A `MaskSource`: the object `prompt` points at, tracked by SAM 2 (see the module docs). `source` is the clip (a
    path, a `SourceFrames`, or None for the run's source, handed over by the pipeline); `model` a SAM 2 video model
    folder or hub id, or a loaded (model, processor) pair. Ask `mask_for` in clip order. `logits` holds the last
    frame's mask logits (float32 (H, W)), for comparison with transformers' own predictor."""

    context = Context(exact=False)  # the track runs from the prompted frame: a segment alone cannot redo it

    def __init__(self, source: str | os.PathLike[str] | SourceFrames | None, prompt: TrackPrompt, *,
                 model: str | tuple[Any, Any] = DEFAULT_MODEL, device: str | None = None,
                 scratch: str | os.PathLike[str] | None = None) -> None:
        self.clip = SourceFrames(source) if isinstance(source, (str, os.PathLike)) else source
        self._own_clip = isinstance(source, (str, os.PathLike))
        self.prompt, self.model, self.device = prompt, model, device
        self.network: Any = None
        self.processor: Any = None
        self.session: Any = None
        self.logits: np.ndarray | None = None
        self._scratch_parent = scratch
        self._scratch: Path | None = None
        self._next = -1  # the next frame the forward pass gives
        self._window = 0
        self._anchor_logits: np.ndarray | None = None

    def attach_source(self, source: SourceFrames) -> None:
        self.clip = self.clip or source

    # --- the session -------------------------------------------------------------------------------------------

    def _start(self) -> SourceFrames:
        clip = given_clip(self.clip, "TrackedMask")
        if self._scratch is not None:
            return clip
        anchor = clip.image(self.prompt.frame) if self.prompt.frame < len(clip) else None
        height, width = anchor.shape[:2] if anchor is not None else (0, 0)
        self.prompt.check(width, height, len(clip))
        import torch

        if isinstance(self.model, tuple):
            self.network, self.processor = self.model
        else:
            self.network, self.processor = load_sam2(self.model, self.device)
        config = self.network.config
        self._window = max(config.num_maskmem, config.max_object_pointers_in_encoder)
        device = next(self.network.parameters()).device
        self.session = self.processor.init_video_session(inference_device=device, dtype=torch.float32)
        prompt: dict[str, Any] = {}
        if self.prompt.point is not None:
            prompt.update(input_points=[[[list(self.prompt.point)]]], input_labels=[[[1]]])
        if self.prompt.box is not None:
            prompt["input_boxes"] = [[list(self.prompt.box)]]
        self.processor.add_inputs_to_inference_session(self.session, frame_idx=self.prompt.frame, obj_ids=OBJECT,
                                                       original_size=(height, width), **prompt)
        self._scratch = Path(tempfile.mkdtemp(prefix="v2v-track-", dir=self._scratch_parent))
        self._anchor_logits = self._step(self.prompt.frame, anchor, reverse=False)
        self._backward(clip)
        self._next = self.prompt.frame + 1
        return clip

    def _pixels(self, image: np.ndarray) -> Any:
        """The processor's input for one frame: what `init_video_session(video=...)` makes of it."""
        return self.processor.video_processor(videos=[image[None]], return_tensors="pt").pixel_values_videos[0][0]

    def _step(self, number: int, image: np.ndarray, reverse: bool) -> np.ndarray:
        """SAM 2 on frame `number` (streamed); its mask logits (float32 (H, W)); what no later frame reads dropped."""
        import torch

        with torch.inference_mode():
            output = self.network(inference_session=self.session, frame_idx=number, frame=self._pixels(image),
                                  reverse=reverse)
            logits = self.processor.post_process_masks([output.pred_masks], [list(image.shape[:2])],
                                                       binarize=False)[0]
        self._forget(number)
        return logits[0, 0].float().cpu().numpy()

    def _forget(self, number: int) -> None:
        """Drop the frames and outputs further than the memory window from both frame `number` and the anchor."""
        session, anchor, window = self.session, self.prompt.frame, self._window

        def kept(frame: int) -> bool:
            return abs(frame - number) <= window or abs(frame - anchor) <= window

        session.processed_frames = {number: session.processed_frames[number]}
        for outputs in session.output_dict_per_obj.values():
            stored = outputs["non_cond_frame_outputs"]
            for frame in [frame for frame in stored if not kept(frame)]:
                del stored[frame]
        for tracked in session.frames_tracked_per_obj.values():
            for frame in [frame for frame in tracked if not kept(frame)]:
                del tracked[frame]

    def _backward(self, clip: SourceFrames) -> None:
        """Masks of frames anchor-1 .. 0 into the scratch folder, `propagate.CHUNK` frames decoded at a time."""
        import cv2

        for number, image in frames_backward(clip, self.prompt.frame, "track the mask back"):
            logits = self._step(number, image, reverse=True)
            cv2.imwrite(str(self._stored(number)), np.where(logits > 0, 255, 0).astype(np.uint8))
        if self.prompt.frame:
            log.info("mask tracked back from frame %d to frame 0", self.prompt.frame)

    def _stored(self, number: int) -> Path:
        assert self._scratch is not None
        return self._scratch / f"{number:07d}.png"

    # --- MaskSource ----------------------------------------------------------------------------------------------

    def mask_for(self, frame: Frame) -> np.ndarray:
        clip = self._start()
        number = clip.number(frame)
        if number < self.prompt.frame:
            self.logits = None
            return read_mask_image(self._stored(number))
        if number == self.prompt.frame:
            self.logits = self._anchor_logits
        else:
            if number < self._next:
                raise InputError(f"SAM 2 tracks forward only: frame {number} was asked after frame {self._next - 1}")
            for between in clip.frames(self._next, number) if number > self._next else ():
                self._step(between.index, between.image, reverse=False)  # a jump ahead: track through the gap
            self.logits = self._step(number, frame.image, reverse=False)
            self._next = number + 1
        return (self.logits > 0).astype(np.float32)

    def close(self) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            self._scratch, self.session = None, None
        clip = getattr(self, "clip", None)
        if clip is not None and getattr(self, "_own_clip", False):
            clip.close()

    def __del__(self) -> None:
        self.close()
