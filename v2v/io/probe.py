"""What a source holds, read without decoding it: container and stream facts, and the video packets' timestamps.

`probe` describes a source for `v2v probe`; `scan_video_packets` is the one demux loop over a file's video
packets (count, timestamps in presentation order, keyframes), used by probe, random access and segments.
"""

from __future__ import annotations

import dataclasses
import math
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


def _stream_info(stream: av.stream.Stream) -> StreamInfo:
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




def probe(path: str | os.PathLike[str], count_frames: bool = True) -> VideoInfo:
    """Describe a source. With `count_frames`, the frame count is exact (packets are counted, not
    decoded) rather than the container's estimate."""
    from v2v.io.reader import VideoFileReader, open_source

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


def frame_seconds(path: str | os.PathLike[str], origin: float | None = None) -> list[float]:
    """Seconds of every video frame, in presentation order, from `origin` (default: the file's start time, where
    its readers count from), from the packets: nothing is decoded."""
    if origin is None:
        from v2v.io.reader import VideoFileReader

        with VideoFileReader(path) as reader:
            origin = reader.start_time
    stamps, time_base = frame_timestamps(path)
    return [float(stamp * time_base) - origin for stamp in stamps]


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
    from v2v.io.reader import TimeWindow
    from v2v.io.sequences import DEFAULT_SEQUENCE_FPS, is_image_sequence

    if is_image_sequence(path):
        rate = Fraction(fps) if fps else DEFAULT_SEQUENCE_FPS
        return float((math.ceil(start * rate - 1e-9) + index) / rate)
    times = frame_seconds(path)
    position = TimeWindow(start).span(times)[0] + index
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
