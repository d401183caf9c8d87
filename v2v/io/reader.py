"""Readers: video files through PyAV, and image sequences (a folder, or the files a printf pattern names), one frame
at a time; `open_source` opens either.

Every reader yields `Frame`s that follow the pixel contract of `v2v.frames` (RGB uint8 (H, W, 3)), one
at a time: nothing holds more than the decoder's own few frames, however long the clip.

Conversions are deliberate and logged once: rotation metadata is applied (the picture comes out upright,
as players show it), 10/12-bit sources are rounded to 8 bits, an alpha channel is dropped.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

import av
import numpy as np

from v2v.errors import InputError, ParameterError, SourceNotFoundError, UsageError
from v2v.frames import Frame
from v2v.io.container import (
    VideoInfo,
    error_reason,
    format_facts,
    frame_seconds,
    open_container,
    stream_info,
    stream_start,
)
from v2v.io.sequences import DEFAULT_SEQUENCE_FPS, IMAGE_SUFFIXES, is_image_sequence, sequence_files

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TimeWindow:
    """Which part of a source to read: [start, end) in seconds from its first frame, at most max_frames."""

    start: float = 0.0
    end: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ParameterError("start", f"must be >= 0 seconds, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise UsageError.naming("{end} ({to}) must be after {start} ({since})", to=self.end, since=self.start)
        if self.max_frames is not None and self.max_frames < 1:
            raise ParameterError("max_frames", f"must be at least 1, got {self.max_frames}")

    def span(self, times: list[float]) -> tuple[int, int]:
        """The window as [begin, stop) indices into `times`, the sorted instants (seconds from the first frame) of
        a clip's frames."""
        begin = bisect.bisect_left(times, self.start - 1e-6)
        stop = len(times) if self.end is None else bisect.bisect_left(times, self.end - 1e-6)
        if self.max_frames is not None:
            stop = min(stop, begin + self.max_frames)
        return begin, stop


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame to the pixel contract, upright (rotation metadata applied)."""
    image = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
    if turns:
        image = np.ascontiguousarray(np.rot90(image, turns))
    return image


class VideoFileReader:
    """Streams the frames of one video file. Use as an iterator, once; close() (or `with`) when done.

    After iteration, `frames_read` is the number of frames yielded and `damage` says why decoding
    stopped early (None when the file decoded to its end or the window was reached).
    """

    def __init__(self, path: str | os.PathLike[str], window: TimeWindow | None = None, first_index: int = 0) -> None:
        """`first_index` numbers the frames when this reader covers a later part of a clip (a segment)."""
        self.path = os.fspath(path)
        self.window = window or TimeWindow()
        self.first_index = first_index
        self._open()
        self.info = self._probe()
        self.frames_read = 0
        self.damage: str | None = None
        # Where reading stopped, in source seconds, when the window cut the clip short (None: at its end).
        self.stopped_at: float | None = None
        self._iterated = False

    def _open(self) -> None:
        """Open the file and take its first video stream, refusing one a damaged header left unusable."""
        self._container = open_container(self.path)
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.path}: has no video stream")
        self._stream = self._container.streams.video[0]
        if self._stream.codec_context is None or self._stream.time_base is None:
            self._container.close()
            missing = "codec" if self._stream.codec_context is None else "time base"
            raise InputError(f"{self.path}: the video stream has no {missing} (damaged header); remux or re-encode it")
        self._stream.thread_type = "AUTO"

    @property
    def start_time(self) -> float:
        """Source time (seconds) of the stream's first frame: the origin of `window`."""
        return stream_start(self._stream)

    def _probe(self) -> VideoInfo:
        rotation = self._first_rotation()  # first: it may reopen the file, and the old stream is then closed
        stream = self._stream
        ctx = stream.codec_context
        width, height = (ctx.height, ctx.width) if rotation % 180 else (ctx.width, ctx.height)
        pix_fmt = ctx.pix_fmt or "unknown"
        bits, alpha = format_facts(pix_fmt)
        duration = None
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        count = stream.frames or None
        if count is None and duration and stream.average_rate:
            count = round(duration * stream.average_rate)
        streams = tuple(stream_info(s) for s in self._container.streams)
        return VideoInfo(
            path=self.path,
            container=self._container.format.name,
            width=width,
            height=height,
            fps=stream.average_rate or stream.guessed_rate,
            time_base=stream.time_base,
            frame_count=count,
            duration=duration,
            codec=ctx.name,
            pix_fmt=pix_fmt,
            bit_depth=bits,
            has_alpha=alpha,
            rotation=rotation,
            streams=streams,
        )

    def _first_rotation(self) -> int:
        """Rotation is per-frame side data in FFmpeg; look at the first frame, then rewind."""
        try:
            frame = next(self._container.decode(self._stream))
        except (StopIteration, av.error.FFmpegError):
            frame = None
        try:
            self._container.seek(0)
        except av.error.FFmpegError:
            # an unseekable input can't be rewound: reopen it
            self._container.close()
            self._open()
        return round(frame.rotation or 0) % 360 if frame is not None else 0

    def __enter__(self) -> VideoFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError("a reader streams its frames once; open the source again to re-read it")
        self._iterated = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        window, stream = self.window, self._stream
        origin = self.start_time
        start, end = origin + window.start, None if window.end is None else origin + window.end
        if window.start > 0:
            self._container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        self._warn_conversions()
        for decoded in self._decode():
            time = float(decoded.pts * stream.time_base) if decoded.pts is not None else None
            if time is not None and time < start - 1e-6:
                continue
            if (time is not None and end is not None and time >= end - 1e-6) or (
                window.max_frames is not None and self.frames_read >= window.max_frames
            ):
                self.stopped_at = time if time is not None else end
                return
            yield Frame(frame_to_rgb(decoded), self.first_index + self.frames_read, decoded.pts, stream.time_base)
            self.frames_read += 1

    def starting_at(self, first: int) -> VideoFileReader:
        """A new reader over the same window from its frame `first` on (numbered from `first`), for a run that
        resumes; past the window's end it starts at the window's last frame."""
        times = frame_seconds(self.path, self.start_time)
        begin, stop = self.window.span(times)
        first = max(0, min(first, stop - begin - 1))
        left = None if self.window.max_frames is None else self.window.max_frames - first
        window = TimeWindow(start=times[begin + first], end=self.window.end, max_frames=left)
        return VideoFileReader(self.path, window, first_index=self.first_index + first)

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames; a damaged or truncated file ends the stream with `damage` set, not an error."""
        try:
            yield from self._container.decode(self._stream)
        except av.error.FFmpegError as exc:
            self.damage = error_reason(exc)
        else:
            # A truncated file often just ends: compare with what the container promised.
            expected = self.info.frame_count
            if self.window == TimeWindow() and expected and self.frames_read < expected - max(2, expected // 50):
                self.damage = f"the file ends after {self.frames_read} of {expected} frames"
        if self.damage:
            log.warning(
                "%s: decoding stopped after %d frames (%s); the rest of the file is damaged or missing",
                self.path, self.frames_read, self.damage,
            )

    def _warn_conversions(self) -> None:
        info = self.info
        if info.bit_depth > 8:
            log.info("%s: %d-bit %s converted to 8-bit RGB", self.path, info.bit_depth, info.pix_fmt)
        if info.has_alpha:
            log.warning("%s: alpha channel of %s dropped (v2v works on RGB)", self.path, info.pix_fmt)
        if info.rotation:
            log.info("%s: rotation metadata (%d degrees) applied to the pixels", self.path, info.rotation)


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
        first = read_image(self.files[0])
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
            image = read_image(self.files[number])
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


def read_image(path: Path) -> np.ndarray:
    """One image file, decoded to the pixel contract."""
    try:
        with av.open(str(path)) as container:
            return frame_to_rgb(next(container.decode(video=0)))
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"{path}: not an image FFmpeg can read") from exc


@runtime_checkable
class Reader(Protocol):
    """What the pipeline needs of a source: frames once, in order, and what happened while reading.

    `info` describes the source; `window` is the part read; `start_time` the source time (seconds) of the
    stream's first frame; after iteration `frames_read`, `damage` (why decoding stopped early, or None) and
    `stopped_at` (source seconds where the window cut the clip short, or None) are set.
    """

    info: VideoInfo
    window: TimeWindow
    frames_read: int
    damage: str | None
    stopped_at: float | None

    @property
    def start_time(self) -> float: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    def starting_at(self, first: int) -> Reader:
        """A new reader of the same window from its frame `first` on, numbered from `first` (to resume a run)."""
        ...


def open_source(
    path: str | os.PathLike[str],
    *,
    start: float = 0.0,
    end: float | None = None,
    max_frames: int | None = None,
    fps: Fraction | float | None = None,
) -> Reader:
    """Open a video file, image folder or printf pattern for streaming.

    `start`/`end` are seconds from the first frame; `max_frames` caps the count; `fps` sets the rate of
    an image sequence (video files keep their own timing).
    """
    window = TimeWindow(start=start, end=end, max_frames=max_frames)
    if is_image_sequence(path):
        return ImageSequenceReader(path, window, Fraction(fps) if fps else None)
    return VideoFileReader(path, window)


