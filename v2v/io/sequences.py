"""Image sequences: a folder of images, or the files a printf pattern names (`frames/%05d.png`), read and written.

The writer puts its images in a hidden folder beside the target and moves them into place only when the run
succeeds, as the video writer does with its file.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from v2v.errors import InputError, OutputError, SourceNotFoundError, UsageError
from v2v.frames import Frame, check_image
from v2v.io.probe import VideoInfo
from v2v.io.reader import TimeWindow, frame_to_rgb

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
        self, path: str | os.PathLike[str], window: TimeWindow | None = None, fps: Fraction | None = None
    ) -> None:
        self.path = os.fspath(path)
        self.window = window or TimeWindow()
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
        window = self.window
        first = math.ceil(window.start / self.time_base - 1e-9)
        last = len(self.files) if window.end is None else math.ceil(window.end / self.time_base - 1e-9)
        last = min(last, len(self.files))
        if window.max_frames is not None:
            last = min(last, first + window.max_frames)
        for number in range(first, last):
            image = _read_image(self.files[number])
            if image.shape[:2] != (self.info.height, self.info.width):
                raise InputError(
                    f"{self.files[number]}: is {image.shape[1]}x{image.shape[0]}, the sequence is "
                    f"{self.info.width}x{self.info.height}; all images of a sequence must have one size"
                )
            yield Frame(image, self.frames_read, number, self.time_base)
            self.frames_read += 1
        if last < len(self.files):
            self.stopped_at = float(last * self.time_base)


def _read_image(path: Path) -> np.ndarray:
    try:
        with av.open(str(path)) as container:
            return frame_to_rgb(next(container.decode(video=0)))
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"{path}: not an image FFmpeg can read") from exc


class ImageSequenceWriter:
    """Writes one image a frame, named by a printf pattern (`out/%05d.png`, numbered from `start_number`, 1 by
    default as FFmpeg does). Images go to a hidden folder first and are moved into place by close()."""

    def __init__(self, pattern: str | os.PathLike[str], *, overwrite: bool = False, start_number: int = 1) -> None:
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
        self._made_folder = False
        self._temp: str | None = None
        self.frames_written = 0

    def __enter__(self) -> ImageSequenceWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.abort() if exc_type is not None else self.close()

    def write(self, frame: Frame) -> None:
        check_image(frame.image)
        if self._temp is None:
            if not os.path.isdir(self.folder):
                os.mkdir(self.folder)
                self._made_folder = True
            self._temp = os.path.join(self.folder, f".v2v-partial-{os.getpid()}")
            os.mkdir(self._temp)
        context = av.CodecContext.create(self._codec, "w")
        context.width, context.height = frame.width, frame.height
        context.pix_fmt = "yuvj444p" if self._codec == "mjpeg" else "rgb24"
        context.time_base = Fraction(1, 25)
        if self._codec == "mjpeg":
            context.options = {"qmin": "1", "qmax": "2"}
        picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        data = b"".join(bytes(p) for p in [*context.encode(picture), *context.encode(None)])
        with open(os.path.join(self._temp, self.name % (self.frames_written + self.start_number)), "wb") as handle:
            handle.write(data)
        self.frames_written += 1

    def close(self) -> None:
        if self._temp is None:
            raise OutputError(f"{self.pattern}: no frames were written, so no images were made")
        if self._overwrite:
            for old in sequence_files(self.pattern):
                old.unlink()
        for image in sorted(Path(self._temp).iterdir()):
            os.replace(image, os.path.join(self.folder, image.name))
        os.rmdir(self._temp)
        self._temp = None

    def abort(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        if self._made_folder:
            try:
                os.rmdir(self.folder)
            except OSError:
                pass


