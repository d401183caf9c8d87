"""Where a clip is cut: segments that start on keyframes, the context decoded around each, and which output frames
each segment owns."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from fractions import Fraction

from v2v.errors import InputError, ParameterError
from v2v.frames import Frame
from v2v.io.container import scan_video_packets
from v2v.io.reader import TimeWindow, VideoFileReader


@dataclasses.dataclass(frozen=True)
class Segment:
    """Frames [first, end) of the clip (indices in presentation order), decoded from frame `context` up to
    (not including) frame `until`: the context before and after that the stages declare."""

    number: int
    first: int
    end: int
    context: int
    until: int

    @property
    def frames(self) -> int:
        return self.end - self.first


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where a clip is cut. `pts` holds every frame's timestamp (in `time_base`) in presentation order."""

    source: str
    pts: list[int]
    time_base: Fraction
    origin: float
    fps: Fraction
    segments: list[Segment]

    def time(self, index: int) -> float:
        """Seconds from the first frame of the stream to frame `index` (or to the clip's end)."""
        if index >= len(self.pts):
            return math.inf
        return float(self.pts[index] * self.time_base) - self.origin


def plan_segments(
    source: str | os.PathLike[str],
    *,
    segment_seconds: float = 10.0,
    overlap: int = 0,
    after: int = 0,
    window: TimeWindow | None = None,
) -> Plan:
    """Cut `source` at keyframes into segments of at least `segment_seconds` (the last may be shorter).

    Only packets are read (no decoding). `window` limits the plan to part of the clip.
    """
    if segment_seconds <= 0:
        raise ParameterError("segment_seconds", f"must be > 0, got {segment_seconds}")
    if overlap < 0 or after < 0:
        raise ParameterError("overlap", f"must be >= 0, got {min(overlap, after)}")
    path = os.fspath(source)
    window = window or TimeWindow()
    with VideoFileReader(path) as reader:
        origin, fps = reader.start_time, reader.info.fps or Fraction(25)
    packets = scan_video_packets(path)
    pts, keyframes, time_base = packets.pts, packets.keyframes, packets.time_base
    if not pts:
        raise InputError(f"{path}: no video frames with timestamps, so it can't be cut into segments")
    # the window, in frame indices
    seconds = [float(p * time_base) - origin for p in pts]
    begin, stop = window.span(seconds)
    if begin >= stop:
        raise InputError(f"{path}: no frames between {window.start} s and {window.end} s")
    cuts = [begin]
    for index in range(begin + 1, stop):
        if pts[index] in keyframes and seconds[index] - seconds[cuts[-1]] >= segment_seconds - 1e-6:
            cuts.append(index)
    bounds = [*cuts, stop]
    # context never reaches outside the window, so frame numbers (Frame.index) stay those of a single pass
    segments = [
        Segment(number, first, end, max(begin, first - overlap), min(stop, end + after))
        for number, (first, end) in enumerate(zip(bounds, bounds[1:], strict=False))
    ]
    return Plan(path, pts, time_base, origin, fps, segments)


class KeepSegment:
    """Keeps the frames a segment owns, those at instants in [start, end) seconds of the source clock, after the
    stages have seen the context around them; counts time from `start`: a segment file that starts at 0 needs
    no edit list, whose coarse movie timescale would round the source's timestamps. Joining adds `start` back.
    Frames a stage made between the segment's last source frame and the next segment's first belong here."""

    def __init__(self, start: Fraction, end: Fraction | None) -> None:
        self.start, self.end = start, end

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if frame.pts is None or frame.time_base is None:
                raise InputError("segmented runs need frames with timestamps")
            instant = frame.pts * frame.time_base
            if instant < self.start or (self.end is not None and instant >= self.end):
                continue
            yield dataclasses.replace(frame, pts=frame.pts - exact_ticks(self.start, frame.time_base))


def exact_ticks(seconds: Fraction, time_base: Fraction) -> int:
    """`seconds` in units of `time_base`; exact, since stages choose time bases that express source instants."""
    ticks = seconds / time_base
    if ticks.denominator != 1:
        raise InputError(f"time base {time_base} can't express the instant {seconds} s exactly")
    return int(ticks)
