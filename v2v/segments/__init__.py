"""Segments: long runs that survive a crash, and that Ray can spread over many workers.

The clip is cut at keyframes about every `segment_seconds`. Each segment is decoded from a keyframe, with
`overlap` frames of context before its first frame fed to the stages (for stages that look back) and dropped
from its output, then encoded into its own file in a work folder. A manifest there records the input's
fingerprint, the options, and which segments are done; it is rewritten atomically after every segment, so a
crash (even kill -9) loses at most the segments in flight, and `resume` picks up from there. Joining copies
the segments' packets into the output in order (no re-encode), checks that every planned frame is there
exactly once, and copies the source's audio and subtitles once.

One module a job: `plan` (cuts, context, which frames a segment owns), `manifest` (the work folder and its
record), `local` and `ray_tasks` (running segments here or as Ray tasks), `join` (checking and joining the
files); this module runs them in order (`run_segmented`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

from v2v.errors import ParameterError, UsageError
from v2v.io.reader import TimeWindow
from v2v.io.sequences import is_image_sequence
from v2v.io.writer import Encoding, check_output
from v2v.pipeline import RunReport, Stage, Timing, context_of, is_one_to_one, output_timing
from v2v.segments.join import join_segments
from v2v.segments.local import StageFactory, encode_segment, run_local, segment_container
from v2v.segments.manifest import MANIFEST, WorkFolder, default_work_dir, is_done, start_or_resume
from v2v.segments.plan import Plan, Segment, plan_segments
from v2v.segments.ray_tasks import run_ray

__all__ = [
    "MANIFEST", "Plan", "Segment", "StageFactory", "WorkFolder", "default_work_dir", "encode_segment",
    "join_segments", "plan_segments", "run_segmented",
]  # fmt: skip

log = logging.getLogger(__name__)


def run_segmented(
    source: str | os.PathLike[str],
    make_stages: StageFactory,
    output: str | os.PathLike[str],
    *,
    options: dict[str, Any] | None = None,
    encoding: Encoding | None = None,
    overwrite: bool = False,
    resume: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    segment_seconds: float = 10.0,
    overlap: int | None = None,
    declared: Sequence[Stage] = (),
    start: float = 0.0,
    end: float | None = None,
    max_frames: int | None = None,
    backend: str = "local",
    workers: int = 2,  # as the CLI's --workers
    address: str | None = None,
    retries: int = 2,
    progress: bool = True,
) -> RunReport:
    """Like `v2v.run`, in segments with a work folder: resumable, and on Ray with `backend="ray"`.

    `make_stages` builds fresh stages for each segment (on a Ray worker, there). The context decoded around
    each segment is what `declared` (stages like those `make_stages` builds, made in this process) declare
    (`v2v.pipeline.context_of`, `output_timing`); without them the stages are taken to be stateless and
    one-to-one. `overlap` overrides the frames before. `options` are what the output depends on besides the
    input (stage settings); `resume` refuses a work folder whose options or input differ. The work folder is
    removed once the output is complete.
    """
    output = os.fspath(output)
    if is_image_sequence(source) or is_image_sequence(output):
        raise UsageError.naming("segmented runs ({resume}, {work_dir}, {backend} ray) need a video file in and out")
    if backend not in ("local", "ray"):
        raise ParameterError("backend", f"must be local or ray, got {backend!r}")
    if workers < 1:
        raise ParameterError("workers", f"must be at least 1, got {workers}")
    check_output(output, overwrite)
    encoding = encoding or Encoding()
    began = time.perf_counter()
    # 1. Plan the cuts and open (or resume) the work folder.
    window = TimeWindow(start=start, end=end, max_frames=max_frames)
    context = context_of(declared)
    overlap = context.before if overlap is None else overlap
    plan = plan_segments(source, segment_seconds=segment_seconds, overlap=overlap, after=context.after,
                         window=window)
    timing = output_timing(declared, Timing(plan.fps, plan.time_base))
    work = WorkFolder(work_dir or default_work_dir(output), segment_container(encoding))
    settings = {
        **(options or {}), "encoding": dataclasses.asdict(encoding), "segment_seconds": segment_seconds,
        "overlap": overlap, "start": start, "end": end, "max_frames": max_frames,
    }
    manifest = start_or_resume(work, plan, json.loads(json.dumps(settings, default=str)), resume)
    states = {entry["number"]: entry for entry in manifest["segments"]}
    pending = [s for s in plan.segments if not is_done(work, states[s.number], s)]
    skipped = len(plan.segments) - len(pending)
    if skipped:
        log.warning("resuming: %d of %d segments were finished already", skipped, len(plan.segments))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.segments), initial=skipped, unit="segment", disable=None, leave=False)

    def done(segment: Segment) -> None:
        states[segment.number].update(state="done", frames=segment.frames, file=work.segment_path(segment.number).name)
        work.save(manifest)
        if bar is not None:
            bar.update(1)

    # 2. Encode what is missing, here or on Ray; 3. join by stream copy, then drop the work folder.
    try:
        if backend == "ray":
            run_ray(
                plan, pending, make_stages, encoding, done, work, workers=workers, address=address, retries=retries
            )
        else:
            run_local(plan, pending, make_stages, encoding, done, work)
        if bar is not None:
            bar.close()
        join_segments(plan, [work.segment_path(s.number) for s in plan.segments], output, trim_start=start,
                      time_base=timing.time_base, one_to_one=is_one_to_one(declared), stretch=timing.stretch)
    except BaseException:
        finished = sum(entry.get("state") == "done" for entry in manifest["segments"])
        log.warning("%d of %d segments are finished and kept in %s; the same command with --resume continues",
                    finished, len(plan.segments), work.folder)
        raise
    finally:
        if bar is not None:
            bar.close()
    shutil.rmtree(work.folder, ignore_errors=True)
    frames = sum(s.frames for s in plan.segments)
    return RunReport(output, frames, frames, time.perf_counter() - began, None)
