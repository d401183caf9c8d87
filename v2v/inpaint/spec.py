"""What the user gave as a mask (`--mask`, `--mask-frame`, `--mask-length`), checked up front, and opened as a
`MaskSource` wherever the stage runs: `MaskSpec.check(...).open()`, or in one call `open_mask(text, source)`. The
file kinds and policies are described in `v2v.inpaint.masks`. Besides a path, `--mask` (on every command that takes
one) reads three inline forms, which make the mask inside the pipeline as the frames pass:

- `auto:person`, `auto:salient`: an automatic mask per frame, steadied in time (`v2v.inpaint.auto.AutoMask`);
- `point:X,Y[@N]`: the object under pixel (X, Y) of the clip's frame N (default `--mask-frame`, else 0), tracked
  through the clip by SAM 2 (`v2v.inpaint.track.TrackedMask`);
- `box:X0,Y0,X1,Y1[@N]`: the object in that box, tracked the same way.

`v2v mask --auto CLASS`, `--point X,Y[@N]` and `--box X0,Y0,X1,Y1[@N]` are the same forms as options.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from v2v.errors import InputError, SourceNotFoundError, UsageError
from v2v.inpaint.masks import LENGTH_POLICIES, MaskSource, SequenceMask, VideoMask, is_image_file, read_mask_image
from v2v.inpaint.propagate import PropagatedMask
from v2v.inpaint.track import DEFAULT_MODEL, TrackPrompt

COMPUTED = ("image", "auto", "track")  # kinds whose masks are made as the clip is read (written first for segments)


def parse_inline(text: str, frame: int | None = None) -> tuple[str, str | None, TrackPrompt | None]:
    """(kind, automatic class, prompt) of an inline mask form ("auto", class, None / "track", None, prompt); ("", None,
    None) for anything else (a path). UsageError (one line) for a form that does not parse."""
    form, _, rest = text.partition(":")
    if form == "auto":
        from v2v.inpaint.segment import SEGMENTERS

        if rest not in SEGMENTERS:
            raise UsageError(f"unknown automatic mask class {rest!r}; choose one of {', '.join(SEGMENTERS)} (--auto "
                             "CLASS, or --mask auto:CLASS)")
        return "auto", rest, None
    if form not in ("point", "box"):
        return "", None, None
    numbers, at, anchor = rest.partition("@")
    count = 2 if form == "point" else 4
    usage = "point:X,Y[@FRAME]" if form == "point" else "box:X0,Y0,X1,Y1[@FRAME]"
    try:
        values = tuple(float(value) for value in numbers.split(","))
        number = int(anchor) if at else (frame or 0)
    except ValueError:
        values, number = (), -1
    if len(values) != count or number < 0 or not all(np.isfinite(values)):
        raise UsageError(f"{form} {rest!r} does not read as {usage} (pixels, and a frame number from 0)")
    if form == "point":
        return "track", None, TrackPrompt(number, point=(values[0], values[1]))
    return "track", None, TrackPrompt(number, box=(values[0], values[1], values[2], values[3]))


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
    auto: str | None = None  # kind "auto": the class
    prompt: TrackPrompt | None = None  # kind "track": what SAM 2 follows
    sam_model: str = DEFAULT_MODEL  # kind "track": a SAM 2 video model's folder or hub id

    @classmethod
    def check(cls, path: str, source: str, *, frame: int | None = None, length: str = "error",
              sam_model: str = DEFAULT_MODEL) -> MaskSpec:
        """One line (InputError/UsageError/ModelError/MissingDependencyError) for a mask that isn't an image, video
        or sequence, a mask video of another length under policy "error", or `frame` with a mask video; for an
        inline form (see the module docs) that does not parse, names an unknown class, points outside the frame or
        past the clip, or whose weights (the package, or SAM 2 in the cache) are missing."""
        from v2v.io.reader import open_source

        if length not in LENGTH_POLICIES:
            raise UsageError(f"mask length policy must be one of {', '.join(LENGTH_POLICIES)}, got {length!r}")
        kind, auto, prompt = parse_inline(os.fspath(path), frame)
        if kind == "auto" and frame is not None:
            raise UsageError.naming("{frame} is for a mask drawn on one frame; an automatic mask is made on every "
                                    "frame")
        if kind:
            return cls._check_inline(os.fspath(path), os.fspath(source), kind, auto, prompt, sam_model)
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

    @classmethod
    def _check_inline(cls, text: str, source: str, kind: str, auto: str | None, prompt: TrackPrompt | None,
                      sam_model: str) -> MaskSpec:
        from v2v.io.probe import probe

        if kind == "auto":
            from v2v.inpaint.segment import check_weights

            check_weights(auto or "")
            return cls(text, source, kind, auto=auto)
        assert prompt is not None
        info = probe(source)
        prompt.check(info.width, info.height, info.frame_count or 0)
        from v2v.inpaint.track import sam2_folder

        sam2_folder(sam_model)  # fails now, before any frame is read, when it is not there
        return cls(text, source, kind, frame=prompt.frame, prompt=prompt, sam_model=sam_model)

    def open(self) -> MaskSource:
        """A fresh mask source; a carried mask or a sequence is handed the run's source by the pipeline."""
        from v2v.io.sequences import sequence_files

        if self.kind == "auto":
            from v2v.inpaint.auto import AutoMask

            return AutoMask(self.auto or "")
        if self.kind == "track":
            from v2v.inpaint.track import TrackedMask

            assert self.prompt is not None
            return TrackedMask(None, self.prompt, model=self.sam_model)
        if self.kind == "image":
            return PropagatedMask(None, self.path, self.frame or 0)
        if self.kind == "sequence":
            return SequenceMask(sequence_files(self.path), what=f"mask {self.path}", length=self.length)
        return VideoMask(self.path, main_origin=self.origin, length=self.length)

    def precompute(self, folder: str | os.PathLike[str]) -> MaskSpec:
        """For a mask made as the clip is read (`COMPUTED`: a carried image, an automatic or a tracked mask): every
        frame's mask written to `folder` as PNGs, and a spec that reads them; other kinds are returned as they are."""
        if self.kind not in COMPUTED:
            return self
        import cv2

        from v2v.io.source_frames import SourceFrames
        from v2v.pipeline import attach_source

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        clip = SourceFrames(self.source)
        masks = self.open()
        try:
            attach_source([masks], clip)
            for number, frame in enumerate(clip.frames(0)):
                cv2.imwrite(str(target / f"{number:07d}.png"), (masks.mask_for(frame) * 255).astype(np.uint8))
        finally:
            masks.close()
            clip.close()
        return dataclasses.replace(self, path=str(target / "%07d.png"), kind="sequence", frame=None, length="error",
                                   auto=None, prompt=None)


def open_mask(text: str, source: str, *, frame: int | None = None, length: str = "error",
              sam_model: str = DEFAULT_MODEL) -> MaskSource:
    """The mask source `text` names (a path or an inline form, see the module docs) for the clip `source`, checked:
    what a command that takes `--mask` hands its stage (run it in a pipeline, which gives it the run's source)."""
    return MaskSpec.check(text, source, frame=frame, length=length, sam_model=sam_model).open()
