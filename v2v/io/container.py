"""What a file's container holds, read without decoding: opening it, its streams' facts, and the video packets'
timestamps. The readers, `probe` and random access all build on this module; it imports nothing else of `v2v.io`.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction

import av

from v2v.errors import InputError, SourceNotFoundError


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


def format_facts(pix_fmt: str) -> tuple[int, bool]:
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
        raise InputError(f"{path}: not a video FFmpeg can read, or damaged beyond use ({error_reason(exc)})") from exc


def error_reason(exc: BaseException) -> str:
    """The one line an FFmpeg or OS error gives."""
    return getattr(exc, "strerror", None) or str(exc)


def stream_info(stream: av.stream.Stream) -> StreamInfo:
    ctx = stream.codec_context
    name = ctx.name if ctx is not None else "unknown"
    if ctx is None:  # a damaged header can leave a stream without codec parameters
        details = ""
    elif stream.type == "video":
        details = f"{ctx.width}x{ctx.height} {ctx.pix_fmt or 'unknown'}"
    elif stream.type == "audio":
        details = f"{ctx.sample_rate} Hz {ctx.layout.name if ctx.layout else ''}".strip()
    else:
        details = ""
    language = stream.metadata.get("language")
    if language and language != "und":
        details = f"{details} [{language}]".strip()
    return StreamInfo(stream.index, stream.type, name, details)


def stream_start(stream: av.stream.Stream) -> float:
    """Source time (seconds) of a stream's first frame: where a clip's frame times count from."""
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


@dataclasses.dataclass
class VideoPackets:
    """What the video packets of a file tell without decoding (see `scan_video_packets`)."""

    count: int  # packets that carry data
    pts: list[int]  # their timestamps, sorted: presentation order
    keyframes: set[int]  # the timestamps of keyframes
    time_base: Fraction
    origin: float = 0.0  # source time (seconds) of the stream's first frame (`stream_start`)

    def seconds(self, origin: float | None = None) -> list[float]:
        """Every frame's time in seconds from `origin` (default: the stream's start, where readers count from)."""
        origin = self.origin if origin is None else origin
        return [float(stamp * self.time_base) - origin for stamp in self.pts]


def scan_video_packets(source: str | os.PathLike[str] | av.container.InputContainer) -> VideoPackets:
    """Read the first video stream's packets (no decoding): count, timestamps and keyframes. `source` is a path,
    or a container already open (left open, read to its end)."""
    if isinstance(source, (str, os.PathLike)):
        with open_container(os.fspath(source)) as container:
            return scan_video_packets(container)
    stream = source.streams.video[0]
    packets = VideoPackets(0, [], set(), stream.time_base, stream_start(stream))
    for packet in source.demux(stream):
        if packet.size:
            packets.count += 1
            if packet.pts is not None:
                packets.pts.append(packet.pts)
                if packet.is_keyframe:
                    packets.keyframes.add(packet.pts)
    packets.pts.sort()  # decode order to presentation order
    return packets


def frame_seconds(path: str | os.PathLike[str], origin: float | None = None) -> list[float]:
    """Seconds of every video frame, in presentation order, from `origin` (default: the file's start time, where
    its readers count from), from the packets: nothing is decoded."""
    return scan_video_packets(path).seconds(origin)
