"""Running segments in this process. `encode_segment` is the one segment function: the Ray executor
(`v2v.segments.ray_tasks`) runs it too, as a task."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import av

from v2v.errors import InputError
from v2v.io.reader import TimeWindow, VideoFileReader
from v2v.io.writer import Encoding, VideoFileWriter
from v2v.pipeline import Stage, Timing, is_one_to_one, output_timing, run
from v2v.segments.manifest import WorkFolder
from v2v.segments.plan import KeepSegment, Plan, Segment

StageFactory = Callable[[], Sequence[Stage]]


def encode_segment(
    plan: Plan, segment: Segment, make_stages: StageFactory, encoding: Encoding, path: str | os.PathLike[str]
) -> int:
    """Decode `segment` (with its context), run fresh stages over it, and encode it at `path` (atomically).

    Returns the number of frames written. Timestamps are the source's, so segments join without arithmetic.
    """
    window = TimeWindow(start=plan.time(segment.context), end=plan.time(segment.until))
    # frames are numbered as in a single pass over the plan's window, context frames included
    reader = VideoFileReader(plan.source, window, first_index=segment.context - plan.segments[0].first)
    stages = list(make_stages())
    timing = output_timing(stages, Timing(plan.fps, plan.time_base))
    writer = VideoFileWriter(path, encoding=encoding, overwrite=True, fps=timing.rate)
    end = None if segment.end >= len(plan.pts) else plan.pts[segment.end] * plan.time_base
    keep = KeepSegment(plan.pts[segment.first] * plan.time_base * timing.stretch,
                       None if end is None else end * timing.stretch)
    report = run(reader, [*stages, keep], writer, progress=False)
    if is_one_to_one(stages) and report.frames_written != segment.frames:
        os.unlink(path)
        raise InputError(
            f"{plan.source}: segment {segment.number} decoded {report.frames_written} of {segment.frames} frames"
            f"{f' ({report.damage})' if report.damage else ''}"
        )
    return report.frames_written


def segment_container(encoding: Encoding) -> str:
    """The segment files' suffix: MP4 keeps pts and dts exactly; Matroska for codecs MP4 can't hold."""
    with av.open(os.devnull, "w", format="mp4") as probe:
        return ".mp4" if encoding.codec in probe.supported_codecs else ".mkv"


def run_local(
    plan: Plan, pending: list[Segment], make_stages: StageFactory, encoding: Encoding, done: Callable[[Segment], None],
    work: WorkFolder,
) -> None:
    for segment in pending:
        encode_segment(plan, segment, make_stages, encoding, work.segment_path(segment.number))
        done(segment)
