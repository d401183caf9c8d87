"""Image sequences: a folder of images, or the files a printf pattern names (`frames/%05d.png`), read and written.

The writer puts its images in a hidden folder beside the target and moves them into place only when the run
succeeds, as the video writer does with its file. Each finished image there is whole, so a run that stops can be
resumed from them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from v2v.errors import InputError, OutputError, SourceNotFoundError, UsageError
from v2v.frames import Frame, check_image
from v2v.io.probe import VideoInfo
from v2v.io.reader import TimeWindow, frame_to_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr", ".dpx", ".tga")
DEFAULT_SEQUENCE_FPS = Fraction(25)
# printf-style frame number in a path: %d, %5d, %05d
_PRINTF_NUMBER = re.compile(r"%0?(\d*)d")
_IMAGE_CODECS = {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}


def is_image_sequence(path: str | os.PathLike[str]) -> bool:
    """True for a printf pattern (`out/%05d.png`) or an existing folder."""
    text = os.fspath(path)
    return bool(_PRINTF_NUMBER.search(os.path.basename(text))) or os.path.isdir(text)


def sequence_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of an image sequence in frame order: a folder's images, or the files a pattern names."""
    text = os.fspath(path)
    if os.path.isdir(text):
        files = [p for p in Path(text).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        return sorted(files, key=_natural_key)
    folder, name = os.path.split(text)
    regex = re.compile(pattern_regex(name))
    folder_path = Path(folder or ".")
    if not folder_path.is_dir():
        return []
    numbered = []
    for entry in folder_path.iterdir():
        match = regex.fullmatch(entry.name)
        if match:
            numbered.append((int(match.group(1)), entry))
    return [entry for _, entry in sorted(numbered)]


def pattern_regex(name: str) -> str:
    """A regex for the file names a printf pattern such as `%05d.png` stands for (group 1: the number)."""
    match = _PRINTF_NUMBER.search(name)
    if match is None:
        raise UsageError(f"{name!r} has no frame-number field such as %05d")
    before, after = re.escape(name[: match.start()]), re.escape(name[match.end() :])
    return f"{before}(\\d+){after}"


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class ImageSequenceReader:
    """Streams a folder of images or the files a printf pattern names, at `fps` (default 25)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        window: TimeWindow | None = None,
        fps: Fraction | None = None,
        first_index: int = 0,
    ) -> None:
        """`first_index` numbers the frames when this reader starts later in the window (a resumed run)."""
        self.path = os.fspath(path)
        self.window = window or TimeWindow()
        self.first_index = first_index
        self.files = sequence_files(self.path)
        if not self.files:
            if os.path.isdir(self.path):
                raise InputError(f"{self.path}: folder has no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
            raise SourceNotFoundError(f"{self.path}: no files match this pattern")
        fps = Fraction(fps) if fps else DEFAULT_SEQUENCE_FPS
        self.time_base = 1 / fps
        first = _read_image(self.files[0])
        self.info = VideoInfo(
            path=self.path,
            container="image sequence",
            width=first.shape[1],
            height=first.shape[0],
            fps=fps,
            time_base=self.time_base,
            frame_count=len(self.files),
            duration=float(len(self.files) / fps),
            codec=self.files[0].suffix.lstrip(".").lower(),
            pix_fmt="rgb24",
            bit_depth=8,
            has_alpha=False,
            rotation=0,
        )
        self.frames_read = 0
        self.damage: str | None = None
        self.stopped_at: float | None = None
        self.start_time = 0.0
        # the number in the name of the first file read (0 or 1, usually): an image-sequence output starts there
        first = min(math.ceil(self.window.start / self.time_base - 1e-9), len(self.files) - 1)
        numbers = re.findall(r"\d+", self.files[first].stem)
        self.first_number = int(numbers[-1]) if numbers else 1

    def __enter__(self) -> ImageSequenceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        first, last = self._span()
        for number in range(first, last):
            image = _read_image(self.files[number])
            if image.shape[:2] != (self.info.height, self.info.width):
                raise InputError(
                    f"{self.files[number]}: is {image.shape[1]}x{image.shape[0]}, the sequence is "
                    f"{self.info.width}x{self.info.height}; all images of a sequence must have one size"
                )
            yield Frame(image, self.first_index + self.frames_read, number, self.time_base)
            self.frames_read += 1
        if last < len(self.files):
            self.stopped_at = float(last * self.time_base)

    def _span(self) -> tuple[int, int]:
        """The window as [first, last) positions in `files`."""
        window = self.window
        first = math.ceil(window.start / self.time_base - 1e-9)
        last = len(self.files) if window.end is None else math.ceil(window.end / self.time_base - 1e-9)
        last = min(last, len(self.files))
        if window.max_frames is not None:
            last = min(last, first + window.max_frames)
        return first, last

    def starting_at(self, first: int) -> ImageSequenceReader:
        """A new reader over the same window from its frame `first` on (numbered from `first`), for a run that
        resumes; past the window's end it starts at the window's last frame."""
        window = self.window
        begin, stop = self._span()
        first = max(0, min(first, stop - begin - 1))
        left = None if window.max_frames is None else window.max_frames - first
        moved = TimeWindow(start=float((begin + first) * self.time_base), end=window.end, max_frames=left)
        return ImageSequenceReader(self.path, moved, 1 / self.time_base, first_index=self.first_index + first)


def _read_image(path: Path) -> np.ndarray:
    try:
        with av.open(str(path)) as container:
            return frame_to_rgb(next(container.decode(video=0)))
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"{path}: not an image FFmpeg can read") from exc


class ImageSequenceWriter:
    """Writes one image a frame, named by a printf pattern (`out/%05d.png`, numbered from `start_number`, 1 by
    default as FFmpeg does).

    Images go to a hidden work folder beside them (`.PATTERN.v2v-partial`), each one whole (written under a
    temporary name, then renamed), and are moved into place by close(). A run that stops keeps the finished ones
    there (unless `keep_partial` is False): the same run with `resume` writes only the frames after them
    (`frames_done`; the frames before arrive again as context and are dropped). `record` ({"input": the input's
    fingerprint, "options": what else the frames depend on}) is saved with them, and a resume with another
    record is refused.
    """

    RECORD = "v2v-run.json"

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        start_number: int = 1,
        resume: bool = False,
        keep_partial: bool = True,
        record: dict[str, Any] | None = None,
    ) -> None:
        from v2v.io.writer import check_output

        self.pattern = os.fspath(pattern)
        self.start_number = start_number
        check_output(self.pattern, overwrite)
        self.folder, self.name = os.path.split(os.path.abspath(self.pattern))
        pattern_regex(self.name)  # raises for a pattern without %d
        suffix = os.path.splitext(self.name)[1].lower()
        if suffix not in _IMAGE_CODECS:
            choices = ", ".join(_IMAGE_CODECS)
            raise UsageError(f"{self.pattern}: can't write {suffix or 'suffix-less'} images; use one of {choices}")
        self._codec = _IMAGE_CODECS[suffix]
        self._overwrite = overwrite
        self._keep_partial = keep_partial
        record = record or {}
        self._record = {
            "input": record.get("input", {"size": None, "sha256_head_tail": None}),
            "options": {**record.get("options", {}), "start_number": start_number},
        }
        self._made_folder = False
        self.work = Path(self.folder) / f".{self.name}.v2v-partial"
        self.frames_done = self._finished_before(resume, overwrite)
        self.frames_written = self.frames_done

    def _finished_before(self, resume: bool, overwrite: bool) -> int:
        """How many frames an earlier run of this output finished (0 without one, or when starting over)."""
        if not self.work.is_dir():
            return 0
        done = 0
        while (self.work / (self.name % (self.start_number + done))).is_file():
            done += 1
        if not resume:
            if not overwrite:
                raise OutputError(
                    f"{self.work} holds {done} finished frames of an earlier run of {self.pattern}; pass --resume "
                    "to continue it, or --overwrite to start over"
                )
            shutil.rmtree(self.work)
            return 0
        from v2v.resume import check_same_run

        try:
            saved = json.loads((self.work / self.RECORD).read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"{self.work} has no readable record of its run ({exc}); remove it to start over"
            ) from exc
        check_same_run(self.work, saved, self._record["input"], self._record["options"])
        log.warning("resuming: %d frames of %s were finished already", done, self.pattern)
        return done

    def __enter__(self) -> ImageSequenceWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.abort() if exc_type is not None else self.close()

    def write(self, frame: Frame) -> None:
        if frame.index < self.frames_done:
            return  # context before the frames a resumed run still has to write
        check_image(frame.image)
        if not self.work.is_dir():
            if not os.path.isdir(self.folder):
                os.mkdir(self.folder)
                self._made_folder = True
            self.work.mkdir()
            (self.work / self.RECORD).write_text(json.dumps(self._record, indent=1, default=str))
        context = av.CodecContext.create(self._codec, "w")
        context.width, context.height = frame.width, frame.height
        context.pix_fmt = "yuvj444p" if self._codec == "mjpeg" else "rgb24"
        context.time_base = Fraction(1, 25)
        if self._codec == "mjpeg":
            context.options = {"qmin": "1", "qmax": "2"}
        picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        data = b"".join(bytes(p) for p in [*context.encode(picture), *context.encode(None)])
        temporary = self.work / ".writing"
        temporary.write_bytes(data)
        os.replace(temporary, self.work / (self.name % (self.frames_written + self.start_number)))
        self.frames_written += 1

    def _finished(self) -> list[Path]:
        return sorted(path for path in self.work.iterdir() if not path.name.startswith((".", self.RECORD)))

    def close(self) -> None:
        if self.frames_written == 0:
            raise OutputError(f"{self.pattern}: no frames were written, so no images were made")
        if self._overwrite:
            for old in sequence_files(self.pattern):
                old.unlink()
        for image in self._finished():
            os.replace(image, os.path.join(self.folder, image.name))
        shutil.rmtree(self.work)

    def abort(self) -> None:
        if not self.work.is_dir():
            return
        kept = len(self._finished())
        if kept and self._keep_partial:
            log.warning("kept %d finished frames in %s: run the same command with --resume to continue", kept,
                        self.work)  # fmt: skip
            return
        shutil.rmtree(self.work, ignore_errors=True)
        if self._made_folder:
            try:
                os.rmdir(self.folder)
            except OSError:
                pass
