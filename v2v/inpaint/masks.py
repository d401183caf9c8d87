"""Masks for inpainting: what a mask is, how one is read, and how each frame of the clip finds its own.

A mask is a float32 (H, W) array in [0, 1] on the frame's grid; white (1) = edit, black (0) = keep. Mask files
(images, videos, image sequences) are read as luma and thresholded at half grey, so anti-aliased or compressed
edges do not leave a faint halo: the soft edge comes from `--feather`, never from the file.

Where the mask of each frame comes from (`open_mask`):

- a mask *video*: a `SideInput` aligned with the clip by time (the mask frame shown at each frame's moment);
- a mask *image sequence* (a folder or a printf pattern): one image per frame of the clip, image k for the
  clip's frame k (counted from the clip's first frame, whatever `--start` says);
- a single mask *image*: drawn on frame N (`--mask-frame`, default 0) and carried through the clip by the
  source's optical flow (`v2v.inpaint.propagate`). N is the clip's own frame number, counted from its first frame
  whatever `--start` says (a run from frame 10 with `--mask-frame 40` uses the mask on the clip's frame 40; one
  with `--mask-frame 3` carries it forward from frame 3, before the window). Segmented runs write every frame's
  mask to a folder first and read it as a sequence.

Every frame finds its mask by its own number in the clip (`ClipFrames`, from its timestamp), so a window or a
segment gets the masks the whole clip would. `v2v mask --start S` writes the window's masks only; to edit masks
and give them back as a sequence, write them for the whole clip (a sequence's image k is always frame k).

Length policy (`length=`): "error" (the default) refuses a mask clip whose frame count differs from the clip's,
with one line naming both counts; "hold" holds a shorter mask's last frame over the rest of the clip (logged once)
and ignores a longer mask's extra frames. Size policy: a mask of another size is resized to the frame's size
(nearest neighbour, then thresholded again) with one warning.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from v2v.errors import InputError, SourceNotFoundError, UsageError
from v2v.frames import LUMA, Frame

if TYPE_CHECKING:
    from v2v.io.side_input import SideInput

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


class ClipFrames:
    """Which frame of the whole clip a streamed frame is (counted from 0), from its timestamp: so masks made for
    the whole clip line up whatever window (--start/--end, segments) the run reads."""

    def __init__(self, source: str | os.PathLike[str]) -> None:
        from v2v.io.sequences import is_image_sequence

        self.sequence = is_image_sequence(source)
        self.stamps: list[int] = []
        if not self.sequence:
            from v2v.io.probe import frame_timestamps

            self.stamps = frame_timestamps(source)[0]

    def __len__(self) -> int:
        return len(self.stamps)

    def number(self, frame: Frame) -> int:
        if frame.pts is None:
            return frame.source_index if frame.source_index is not None else frame.index
        if self.sequence:
            return int(frame.pts)  # image sequences stamp each frame with its file's number
        return bisect.bisect_left(self.stamps, frame.pts)


class SequenceMask:
    """One mask image per frame of the clip: image k of `files` for the clip's frame k (see `ClipFrames`)."""

    def __init__(self, files: list[Path], clip: ClipFrames, *, what: str = "mask", length: str = "error") -> None:
        if length not in LENGTH_POLICIES:
            raise UsageError(f"mask length policy must be one of {', '.join(LENGTH_POLICIES)}, got {length!r}")
        self.files, self.clip, self.what, self.length = files, clip, what, length
        self._told: set[str] = set()
        self._cache: tuple[int, np.ndarray] | None = None

    def mask_for(self, frame: Frame) -> np.ndarray:
        number = self.clip.number(frame)
        if number >= len(self.files):
            if self.length == "error":
                raise InputError(f"{self.what} has {len(self.files)} images but the video has a frame {number}; give "
                                 "one image per frame, or --mask-length hold to hold the last one")
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


def mask_kind(path: str | os.PathLike[str]) -> str:
    """"image", "sequence" or "video" for a mask path; InputError (one line) for anything else."""
    from v2v.io.sequences import is_image_sequence, sequence_files

    text = os.fspath(path)
    if is_image_sequence(text):
        if not sequence_files(text):
            raise InputError(f"mask {text} names no images; give an image, a video or an image sequence")
        return "sequence"
    if not os.path.exists(text):
        raise SourceNotFoundError(f"mask {text} not found")
    if is_image_file(text):
        read_mask_image(text)  # fails now if it is not one
        return "image"
    from v2v.io.probe import probe

    try:
        info = probe(text)
    except Exception as exc:  # noqa: BLE001 (probe raises v2v errors and PyAV's; either way: not a video)
        raise InputError(f"mask {text} is neither an image nor a video (white = edit): {str(exc).splitlines()[0]}"
                         ) from None
    if info.frame_count == 1 and info.codec in ("png", "mjpeg", "bmp", "tiff", "webp"):
        return "image"
    return "video"


def mask_frame_count(path: str | os.PathLike[str]) -> int:
    """How many frames a mask video or sequence has."""
    from v2v.io.sequences import is_image_sequence, sequence_files

    if is_image_sequence(path):
        return len(sequence_files(path))
    from v2v.io.probe import scan_video_packets

    return scan_video_packets(path).count


def clip_frame_count(source: str | os.PathLike[str]) -> int:
    """The number of frames of the whole clip (counted from its packets, or its files)."""
    return mask_frame_count(source)


def check_mask_length(mask: str | os.PathLike[str], source: str | os.PathLike[str], length: str) -> None:
    """With length policy "error", a mask video or sequence must have as many frames as the clip (one line
    naming both counts otherwise); "hold" takes any length."""
    if length == "hold":
        return
    theirs, ours = mask_frame_count(mask), clip_frame_count(source)
    if theirs != ours:
        raise InputError(f"mask {os.fspath(mask)} has {theirs} frames but the video {os.fspath(source)} has {ours}; "
                         "give a mask of the same length, or choose --mask-length hold (a shorter mask's last frame is "
                         "held, a longer one's extra frames ignored)")


@dataclasses.dataclass
class MaskSpec:
    """What the user gave as a mask, checked, and able to open a fresh `MaskSource` wherever the stage runs
    (pickled to a Ray worker, or once per segment). A single image opens a `PropagatedMask`, which is not for
    segmented runs: `precompute` writes its masks to a folder first, after which this opens them as a sequence."""

    path: str
    source: str
    kind: str
    frame: int | None = None
    length: str = "error"
    origin: float = 0.0

    @classmethod
    def check(cls, path: str, source: str, *, frame: int | None = None, length: str = "error") -> MaskSpec:
        """One line (InputError/UsageError) for a mask that isn't an image, video or sequence, a mask video of
        another length under policy "error", or --mask-frame with a mask video."""
        from v2v.io.reader import open_source

        if length not in LENGTH_POLICIES:
            raise UsageError(f"mask length policy must be one of {', '.join(LENGTH_POLICIES)}, got {length!r}")
        kind = mask_kind(path)
        if kind != "image" and frame is not None:
            raise UsageError(f"--mask-frame is for a single mask image; {path} is a mask {kind} with a mask for every "
                             "frame")
        if kind != "image":
            check_mask_length(path, source, length)
        elif frame:
            count = clip_frame_count(source)
            if frame >= count:
                raise InputError(f"--mask-frame {frame} is outside the clip (frames 0 to {count - 1})")
        with open_source(source) as reader:
            origin = reader.start_time
        return cls(os.fspath(path), os.fspath(source), kind, frame, length, origin)

    def open(self) -> MaskSource:
        from v2v.io.sequences import sequence_files

        if self.kind == "image":
            from v2v.inpaint.propagate import PropagatedMask

            return PropagatedMask(self.source, self.path, self.frame or 0)
        if self.kind == "sequence":
            return SequenceMask(sequence_files(self.path), ClipFrames(self.source), what=f"mask {self.path}",
                                length=self.length)
        return VideoMask(self.path, main_origin=self.origin, length=self.length)

    def precompute(self, folder: str | os.PathLike[str]) -> MaskSpec:
        """For a single image: every frame's propagated mask written to `folder` as PNGs, and a spec that reads
        them; other kinds are returned as they are."""
        if self.kind != "image":
            return self
        import cv2

        from v2v.inpaint.propagate import PropagatedMask

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        masks = PropagatedMask(self.source, self.path, self.frame or 0)
        try:
            for number, (_, mask) in enumerate(masks.masks()):
                cv2.imwrite(str(target / f"{number:07d}.png"), (mask * 255).astype(np.uint8))
        finally:
            masks.close()
        return dataclasses.replace(self, path=str(target / "%07d.png"), kind="sequence", frame=None, length="error")
