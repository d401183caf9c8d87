"""Masks for inpainting: what a mask is, how one is read, and how each frame of the clip finds its own.

A mask is a float32 (H, W) array in [0, 1] on the frame's grid; white (1) = edit, black (0) = keep. Mask files
(images, videos, image sequences) are read as luma and thresholded at half grey, so anti-aliased or compressed
edges do not leave a faint halo: the soft edge comes from `--feather`, never from the file.

Where the mask of each frame comes from (`v2v.inpaint.spec.MaskSpec` checks what the user gave and opens one):

- a mask *video*: a `SideInput` aligned with the clip by time (the mask frame shown at each frame's moment);
- a mask *image sequence* (a folder or a printf pattern): one image per frame of the clip, image k for the
  clip's frame k (counted from the clip's first frame, whatever `--start` says);
- a single mask *image*: drawn on frame N (`--mask-frame`, default 0) and carried through the clip by the
  source's optical flow (`v2v.inpaint.propagate`). N is the clip's own frame number, counted from its first frame
  whatever `--start` says (a run from frame 10 with `--mask-frame 40` uses the mask on the clip's frame 40; one
  with `--mask-frame 3` carries it forward from frame 3, before the window). Segmented runs write every frame's
  mask to a folder first and read it as a sequence.

Every frame finds its mask by its own number in the clip (`SourceFrames.number`, from its timestamp: the run hands
its source to the stage, which passes it on with `attach_source`), so a window or a segment gets the masks the whole
clip would. `v2v mask --start S` writes the window's masks only; to edit masks
and give them back as a sequence, write them for the whole clip (a sequence's image k is always frame k).

Length policy (`length=`): "error" (the default) refuses a mask clip whose frame count differs from the clip's,
with one line naming both counts; "hold" holds a shorter mask's last frame over the rest of the clip (logged once)
and ignores a longer mask's extra frames. Size policy: a mask of another size is resized to the frame's size
(nearest neighbour, then thresholded again) with one warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from v2v.errors import InputError, SourceNotFoundError, UsageError
from v2v.frames import LUMA, Frame

if TYPE_CHECKING:
    from v2v.io.side_input import SideInput
    from v2v.io.source_frames import SourceFrames

log = logging.getLogger(__name__)

LENGTH_POLICIES = ("error", "hold")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class MaskSource(Protocol):
    """Gives the mask (float32 (H, W) in [0, 1], the frame's size) of each frame, asked in clip order."""

    def mask_for(self, frame: Frame) -> np.ndarray: ...

    def close(self) -> None: ...


def binarize(image: np.ndarray) -> np.ndarray:
    """RGB/grey uint8 (H, W[, 3]) -> float32 (H, W) of 0 and 1 (white = 1), thresholded at half grey on luma."""
    if image.ndim == 3:
        luma = image[..., 0] * LUMA[0] + image[..., 1] * LUMA[1] + image[..., 2] * LUMA[2]
    else:
        luma = image.astype(np.float32)
    return (luma >= 127.5).astype(np.float32)


def fit_mask(mask: np.ndarray, height: int, width: int, what: str, told: set[str]) -> np.ndarray:
    """`mask` at height x width (nearest neighbour), warning once per `what` (tracked in `told`)."""
    if mask.shape == (height, width):
        return mask
    if what not in told:
        told.add(what)
        log.warning("%s is %dx%d; resized to the video's %dx%d", what, mask.shape[1], mask.shape[0], width, height)
    import cv2

    return (cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.float32)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES and Path(path).is_file()


def read_mask_image(path: str | os.PathLike[str]) -> np.ndarray:
    """A single mask image as float32 (H, W) of 0/1; InputError (one line) when it is not an image."""
    import cv2

    text = os.fspath(path)
    if not os.path.exists(text):
        raise SourceNotFoundError(f"mask {text} not found")
    image = cv2.imread(text, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"mask {text} is not an image OpenCV can read; give a PNG/JPEG image, a video or an image "
                         "sequence (white = edit)")
    if image.ndim == 3 and image.shape[2] == 4:  # an alpha channel: the painted (opaque) pixels are the mask
        alpha = image[..., 3]
        if alpha.min() < 255:
            return (alpha >= 128).astype(np.float32)
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = (image.astype(np.float32) / np.iinfo(image.dtype).max * 255).astype(np.uint8)
    if image.ndim == 3:
        image = image[..., ::-1]  # BGR -> RGB
    return binarize(image)


def given_clip(clip: SourceFrames | None, what: str) -> SourceFrames:
    """The clip a mask source reads; a clear error for one used outside a pipeline without being given it."""
    if clip is None:
        raise ValueError(f"{what} needs the clip: give it one, or run it in a pipeline, which hands it the run's "
                         "source")
    return clip


class SequenceMask:
    """One mask image per frame of the clip: image k of `files` for the clip's frame k (`clip.number`). `clip` is the
    clip read; None: the run's source, handed over by the pipeline (`attach_source`)."""

    def __init__(self, files: list[Path], clip: SourceFrames | None = None, *, what: str = "mask",
                 length: str = "error") -> None:
        if length not in LENGTH_POLICIES:
            raise UsageError(f"mask length policy must be one of {', '.join(LENGTH_POLICIES)}, got {length!r}")
        self.files, self.clip, self.what, self.length = files, clip, what, length
        self._told: set[str] = set()
        self._cache: tuple[int, np.ndarray] | None = None

    def attach_source(self, source: SourceFrames) -> None:
        self.clip = self.clip or source

    def mask_for(self, frame: Frame) -> np.ndarray:
        number = given_clip(self.clip, "SequenceMask").number(frame)
        if number >= len(self.files):
            if self.length == "error":
                raise InputError.naming("{what} has {count} images but the video has a frame {number}; give one image "
                                        "per frame, or {length} hold to hold the last one", what=self.what,
                                        count=len(self.files), number=number)
            if "held" not in self._told:
                self._told.add("held")
                log.warning("%s has %d images, fewer than the video's frames; its last image is held", self.what,
                            len(self.files))
            number = len(self.files) - 1
        if self._cache is None or self._cache[0] != number:
            self._cache = (number, read_mask_image(self.files[number]))
        return fit_mask(self._cache[1], frame.height, frame.width, self.what, self._told)

    def close(self) -> None:
        self._cache = None


class VideoMask:
    """A mask video read beside the clip (`SideInput`, aligned by time; its own decode thread). Give its path, or a
    `SideInput` of your own (its alignment and policies are then yours)."""

    def __init__(self, path: str | os.PathLike[str] | SideInput, *, main_origin: float = 0.0,
                 length: str = "error") -> None:
        from v2v.io.side_input import SideInput

        if length not in LENGTH_POLICIES:
            raise UsageError(f"mask length policy must be one of {', '.join(LENGTH_POLICIES)}, got {length!r}")
        self.side = path if isinstance(path, SideInput) else SideInput(
            path, what="mask video", align="time", main_origin=main_origin,
            shorter="error" if length == "error" else "hold", size="resize")

    def mask_for(self, frame: Frame) -> np.ndarray:
        return binarize(self.side.frame_for(frame))

    def close(self) -> None:
        self.side.close()
