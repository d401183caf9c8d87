"""Joining finished segments: their packets copied into the output in order (no re-encode), every frame checked,
the source's audio and subtitles muxed once."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction

from v2v.io.remux import Part, join_parts
from v2v.io.writer import AudioSource
from v2v.pipeline import Timing, output_shift
from v2v.segments.plan import Plan, exact_ticks


def join_segments(
    plan: Plan,
    files: Sequence[str | os.PathLike[str]],
    output: str,
    *,
    trim_start: float,
    time_base: Fraction | None = None,
    one_to_one: bool = True,
    stretch: Fraction = Fraction(1),
) -> None:
    """Stream-copy the segments' video into `output` in order, with the source's audio/subtitles muxed once.

    Segment files count time from their first frame (see `v2v.segments.plan.KeepSegment`); here it goes back to
    the source's clock in `time_base` (the stages' output time base, with instants scaled by `stretch`), less
    `trim_start`. One-to-one stages must give every planned frame exactly once; other stages' frames must be
    unique and inside their segment's span.
    """
    time_base = time_base or plan.time_base
    parts = []
    for segment, path in zip(plan.segments, files, strict=True):
        start = plan.pts[segment.first] * plan.time_base * stretch
        end = math.inf if segment.end >= len(plan.pts) else plan.pts[segment.end] * plan.time_base * stretch
        expected = [round(p * plan.time_base / time_base) for p in plan.pts[segment.first : segment.end]]
        parts.append(Part(os.fspath(path), exact_ticks(start, time_base), expected if one_to_one else None,
                          f"segment {segment.number}",
                          limit=None if end == math.inf else exact_ticks(end, time_base)))
    last = plan.segments[-1].end
    end = None if last == len(plan.pts) else plan.time(last) + plan.origin
    audio = AudioSource(plan.source, origin=plan.origin, start=trim_start, end=end) if stretch == 1 else None
    join_parts(parts, output, time_base=time_base, audio=audio,
               shift=output_shift(Timing(None, None, stretch), plan.origin, trim_start))
