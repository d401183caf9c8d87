"""Reading: video files through PyAV, folders of images and printf patterns (`frames/%05d.png`).

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

import av
import numpy as np

from v2v.errors import InputError, SourceNotFoundError, UsageError
from v2v.frames import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr", ".dpx", ".tga")
DEFAULT_SEQUENCE_FPS = Fraction(25)
# printf-style frame number in a path: %d, %5d, %05d
_PRINTF_NUMBER = re.compile(r"%0?(\d*)d")


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """One stream of a container, as `v2v probe` lists it."""

    index: int
    kind: str
    codec: str
    details: str


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a source holds. `width`/`height` are the displayed size (after rotation)."""

    path: str
    container: str
    width: int
    height: int
    fps: Fraction | None
    time_base: Fraction | None
    frame_count: int | None
    duration: float | None
    codec: str
    pix_fmt: str
    bit_depth: int
    has_alpha: bool
    rotation: int
    streams: tuple[StreamInfo, ...] = ()
    variable_frame_rate: bool | None = None  # known once packets are scanned (probe with count_frames)

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["fps"] = float(self.fps) if self.fps else None
        data["time_base"] = str(self.time_base) if self.time_base else None
        return data


@dataclasses.dataclass(frozen=True)
class TimeWindow:
    """Which part of a source to read: [start, end) in seconds from its first frame, at most max_frames."""

    start: float = 0.0
    end: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.start < 0:
            raise UsageError(f"--start must be >= 0 seconds, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise UsageError(f"--end ({self.end}) must be after --start ({self.start})")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames must be at least 1, got {self.max_frames}")


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


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame to the pixel contract, upright (rotation metadata applied)."""
    image = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
    if turns:
        image = np.ascontiguousarray(np.rot90(image, turns))
    return image


def _format_facts(pix_fmt: str) -> tuple[int, bool]:
    """(bit depth, has alpha) of a pixel format."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, TypeError):
        return 8, False
    bits = max((c.bits for c in fmt.components), default=8)
    return bits, any(c.is_alpha for c in fmt.components)


def open_container(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise SourceNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder with no images in it")
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a video FFmpeg can read, or damaged beyond use ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


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
        self._container = open_container(self.path)
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.path}: has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.info = self._probe()
        self.frames_read = 0
        self.damage: str | None = None
        # Where reading stopped, in source seconds, when the window cut the clip short (None: at its end).
        self.stopped_at: float | None = None
        self._iterated = False

    @property
    def start_time(self) -> float:
        """Source time (seconds) of the stream's first frame: the origin of `window`."""
        stream = self._stream
        if stream.start_time is None:
            return 0.0
        return float(stream.start_time * stream.time_base)

    def _probe(self) -> VideoInfo:
        stream = self._stream
        ctx = stream.codec_context
        rotation = self._first_rotation()
        width, height = (ctx.height, ctx.width) if rotation % 180 else (ctx.width, ctx.height)
        pix_fmt = ctx.pix_fmt or "unknown"
        bits, alpha = _format_facts(pix_fmt)
        duration = None
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        count = stream.frames or None
        if count is None and duration and stream.average_rate:
            count = round(duration * stream.average_rate)
        streams = tuple(_stream_info(s) for s in self._container.streams)
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
            self._container = open_container(self.path)
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
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

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames; a damaged or truncated file ends the stream with `damage` set, not an error."""
        try:
            yield from self._container.decode(self._stream)
        except av.error.FFmpegError as exc:
            self.damage = _reason(exc)
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


def _stream_info(stream: av.stream.Stream) -> StreamInfo:
    ctx = stream.codec_context
    name = ctx.name if ctx is not None else "unknown"
    if stream.type == "video":
        details = f"{ctx.width}x{ctx.height} {ctx.pix_fmt}"
    elif stream.type == "audio":
        details = f"{ctx.sample_rate} Hz {ctx.layout.name if ctx.layout else ''}".strip()
    else:
        details = ""
    language = stream.metadata.get("language")
    if language and language != "und":
        details = f"{details} [{language}]".strip()
    return StreamInfo(stream.index, stream.type, name, details)


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


Reader = VideoFileReader | ImageSequenceReader


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


def probe(path: str | os.PathLike[str], count_frames: bool = True) -> VideoInfo:
    """Describe a source. With `count_frames`, the frame count is exact (packets are counted, not
    decoded) rather than the container's estimate."""
    with open_source(path) as reader:
        info = reader.info
        if count_frames and isinstance(reader, VideoFileReader):
            count, variable = _scan_packets(reader.path)
            info = dataclasses.replace(info, frame_count=count, variable_frame_rate=variable)
    return info


def frame_timestamps(path: str | os.PathLike[str]) -> tuple[list[int], Fraction]:
    """Every video frame's pts in presentation order (from the packets, nothing decoded), and the time base:
    frame i of the stream is at `pts[i] * time_base`."""
    packets = scan_video_packets(path)
    return packets.pts, packets.time_base


@dataclasses.dataclass
class VideoPackets:
    """What the video packets of a file tell without decoding (see `scan_video_packets`)."""

    count: int  # packets that carry data
    pts: list[int]  # their timestamps, sorted: presentation order
    keyframes: set[int]  # the timestamps of keyframes
    time_base: Fraction


def scan_video_packets(path: str | os.PathLike[str]) -> VideoPackets:
    """Read the first video stream's packets (no decoding): count, timestamps and keyframes."""
    with open_container(os.fspath(path)) as container:
        stream = container.streams.video[0]
        packets = VideoPackets(0, [], set(), stream.time_base)
        for packet in container.demux(stream):
            if packet.size:
                packets.count += 1
                if packet.pts is not None:
                    packets.pts.append(packet.pts)
                    if packet.is_keyframe:
                        packets.keyframes.add(packet.pts)
    packets.pts.sort()  # decode order to presentation order
    return packets


def time_of_frame(path: str | os.PathLike[str], index: int, start: float = 0.0, fps: Fraction | None = None) -> float:
    """Seconds from a source's first frame to its frame `index`, counting from the first frame at or after
    `start`: where a reader must start to deliver that frame first (e.g. a side input of a later segment)."""
    if is_image_sequence(path):
        rate = Fraction(fps) if fps else DEFAULT_SEQUENCE_FPS
        return float((math.ceil(start * rate - 1e-9) + index) / rate)
    with VideoFileReader(path) as reader:
        origin = reader.start_time
    stamps, time_base = frame_timestamps(path)
    times = [float(stamp * time_base) - origin for stamp in stamps]
    position = bisect.bisect_left(times, start - 1e-6) + index
    if position >= len(times):
        raise InputError(f"{os.fspath(path)}: has no frame {index} after {start} s (it has {len(times)} frames)")
    return times[position]


def _scan_packets(path: str) -> tuple[int | None, bool | None]:
    """(frame count, whether frame durations vary) from the video packets, without decoding."""
    try:
        packets = scan_video_packets(path)
    except av.error.FFmpegError:
        return None, None
    count, stamps = packets.count, packets.pts
    steps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    # one tick of rounding is the time base's, not the clip's
    return count, (max(steps) - min(steps) > 1) if steps else None
