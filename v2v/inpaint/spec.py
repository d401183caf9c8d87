"""What the user gave as a mask (`--mask`, `--mask-frame`, `--mask-length`), checked up front, and opened as a
`MaskSource` wherever the stage runs: `MaskSpec.check(...).open()`. The kinds and policies are described in
`v2v.inpaint.masks`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from v2v.errors import InputError, SourceNotFoundError, UsageError
from v2v.inpaint.masks import LENGTH_POLICIES, MaskSource, SequenceMask, VideoMask, is_image_file, read_mask_image
from v2v.inpaint.propagate import PropagatedMask


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
    from v2v.io.container import scan_video_packets

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
        raise InputError.naming("mask {mask} has {theirs} frames but the video {source} has {ours}; give a mask of "
                                "the same length, or choose {length} hold (a shorter mask's last frame is held, a "
                                "longer one's extra frames ignored)", mask=os.fspath(mask), theirs=theirs,
                                source=os.fspath(source), ours=ours)


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
        another length under policy "error", or `frame` with a mask video."""
        from v2v.io.reader import open_source

        if length not in LENGTH_POLICIES:
            raise UsageError(f"mask length policy must be one of {', '.join(LENGTH_POLICIES)}, got {length!r}")
        kind = mask_kind(path)
        if kind != "image" and frame is not None:
            raise UsageError.naming("{frame} is for a single mask image; {path} is a mask {kind} with a mask for "
                                    "every frame", path=path, kind=kind)
        if kind != "image":
            check_mask_length(path, source, length)
        elif frame:
            count = clip_frame_count(source)
            if frame >= count:
                raise InputError.naming("{frame} {number} is outside the clip (frames 0 to {last})", number=frame,
                                        last=count - 1)
        with open_source(source) as reader:
            origin = reader.start_time
        return cls(os.fspath(path), os.fspath(source), kind, frame, length, origin)

    def open(self) -> MaskSource:
        """A fresh mask source; a carried mask or a sequence is handed the run's source by the pipeline."""
        from v2v.io.sequences import sequence_files

        if self.kind == "image":
            return PropagatedMask(None, self.path, self.frame or 0)
        if self.kind == "sequence":
            return SequenceMask(sequence_files(self.path), what=f"mask {self.path}", length=self.length)
        return VideoMask(self.path, main_origin=self.origin, length=self.length)

    def precompute(self, folder: str | os.PathLike[str]) -> MaskSpec:
        """For a single image: every frame's propagated mask written to `folder` as PNGs, and a spec that reads
        them; other kinds are returned as they are."""
        if self.kind != "image":
            return self
        import cv2

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        masks = PropagatedMask(self.source, self.path, self.frame or 0)
        try:
            for number, (_, mask) in enumerate(masks.masks()):
                cv2.imwrite(str(target / f"{number:07d}.png"), (mask * 255).astype(np.uint8))
        finally:
            masks.close()
        return dataclasses.replace(self, path=str(target / "%07d.png"), kind="sequence", frame=None, length="error")
