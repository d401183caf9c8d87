"""`probe`: what a source holds, as `v2v probe` reports it (the facts themselves come from `v2v.io.container`)."""

from __future__ import annotations

import dataclasses
import os

import av

from v2v.io.container import VideoInfo, scan_video_packets
from v2v.io.reader import VideoFileReader, open_source


def probe(path: str | os.PathLike[str], count_frames: bool = True) -> VideoInfo:
    """Describe a source. With `count_frames`, the frame count is exact (packets are counted, not
    decoded) rather than the container's estimate."""
    with open_source(path) as reader:
        info = reader.info
        if count_frames and isinstance(reader, VideoFileReader):
            count, variable = _scan_packets(reader.path)
            info = dataclasses.replace(info, frame_count=count, variable_frame_rate=variable)
    return info


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
