"""Segments: long runs that survive a crash, and that Ray can spread over many workers.

The clip is cut at keyframes about every `segment_seconds`. Each segment is decoded from a keyframe, with
`overlap` frames of context before its first frame fed to the stages (for stages that look back) and dropped
from its output, then encoded into its own file in a work folder. A manifest there records the input's
fingerprint, the options, and which segments are done; it is rewritten atomically after every segment, so a
crash (even kill -9) loses at most the segments in flight, and `resume` picks up from there. Joining copies
the segments' packets into the output in order (no re-encode), checks that every planned frame is there
exactly once, and copies the source's audio and subtitles once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from v2v.errors import InputError, OutputError, UsageError, V2VError, require
from v2v.frames import Frame
from v2v.io.probe import scan_video_packets
from v2v.io.reader import TimeWindow, VideoFileReader
from v2v.io.remux import Part, join_parts
from v2v.io.sequences import is_image_sequence
from v2v.io.writer import AudioSource, Encoding, VideoFileWriter, check_output, temp_name
from v2v.pipeline import RunReport, Stage, Timing, context_of, is_one_to_one, output_shift, output_timing, run
from v2v.resume import check_same_run, fingerprint

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
StageFactory = Callable[[], Sequence[Stage]]


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
        raise UsageError(f"--segment-seconds must be > 0, got {segment_seconds}")
    if overlap < 0 or after < 0:
        raise UsageError(f"--overlap must be >= 0, got {min(overlap, after)}")
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


class WorkFolder:
    """The folder of finished segments and their manifest (JSON, replaced atomically on every change)."""

    def __init__(self, folder: str | os.PathLike[str], suffix: str) -> None:
        self.folder = Path(folder)
        self.suffix = suffix

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def segment_path(self, number: int) -> Path:
        return self.folder / f"segment_{number:05d}{self.suffix}"

    def load(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
            if manifest.get("v2v_manifest") != MANIFEST_VERSION or not isinstance(manifest.get("segments"), list):
                raise ValueError("not a v2v manifest of this version")
            return manifest
        except (OSError, ValueError) as exc:
            raise InputError(
                f"work folder {self.folder} has a damaged manifest ({exc}); remove the folder to start over"
            ) from exc

    def save(self, manifest: dict[str, Any]) -> None:
        temporary = self.manifest_path.with_suffix(".json.partial")
        temporary.write_text(json.dumps(manifest, indent=1))
        os.replace(temporary, self.manifest_path)


def default_work_dir(output: str) -> str:
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.v2v-work")


def _start_or_resume(
    work: WorkFolder, plan: Plan, options: dict[str, Any], resume: bool
) -> dict[str, Any]:
    """The manifest to work from: a new one, or the existing one after checking it belongs to this run."""
    source = fingerprint(plan.source)
    segments = [{"number": s.number, "first": s.first, "end": s.end, "state": "pending"} for s in plan.segments]
    fresh = {"v2v_manifest": MANIFEST_VERSION, "input": source, "options": options, "segments": segments}
    if not work.manifest_path.exists():
        if work.folder.exists() and any(work.folder.iterdir()):
            raise OutputError(
                f"work folder {work.folder} is not empty and has no manifest; remove it or choose another"
            )
        work.folder.mkdir(parents=True, exist_ok=True)
        work.save(fresh)
        return fresh
    if not resume:
        raise OutputError(
            f"work folder {work.folder} exists from an earlier run; pass --resume to continue it, or remove it"
        )
    manifest = work.load()
    check_same_run(work.folder, manifest, source, options)
    planned = [(s["first"], s["end"]) for s in segments]
    if [(s["first"], s["end"]) for s in manifest["segments"]] != planned:
        raise InputError(f"work folder {work.folder} was cut differently; remove it to start over")
    return manifest


class _KeepSegment:
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
            yield dataclasses.replace(frame, pts=frame.pts - _ticks(self.start, frame.time_base))


def _ticks(seconds: Fraction, time_base: Fraction) -> int:
    """`seconds` in units of `time_base`; exact, since stages choose time bases that express source instants."""
    ticks = seconds / time_base
    if ticks.denominator != 1:
        raise InputError(f"time base {time_base} can't express the instant {seconds} s exactly")
    return int(ticks)


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
    keep = _KeepSegment(plan.pts[segment.first] * plan.time_base * timing.stretch,
                        None if end is None else end * timing.stretch)
    report = run(reader, [*stages, keep], writer, progress=False)
    if is_one_to_one(stages) and report.frames_written != segment.frames:
        os.unlink(path)
        raise InputError(
            f"{plan.source}: segment {segment.number} decoded {report.frames_written} of {segment.frames} frames"
            f"{f' ({report.damage})' if report.damage else ''}"
        )
    return report.frames_written


# A Ray worker's stages, by the object id of the factory they came from: models load once per worker process,
# not once per segment.
_WORKER_STAGES: dict[str, Sequence[Stage]] = {}


def _segment_bytes(plan: Plan, segment: Segment, factory: list[Any], encoding: Encoding, suffix: str) -> bytes:
    """Ray task body: encode one segment in the worker's temp folder and hand back the file's bytes, so that
    workers need no storage shared with the driver. `factory` is `[ObjectRef]` of the stage factory (in a list,
    so Ray leaves it a reference): it is fetched and called once per worker process."""
    import tempfile

    import ray

    key = factory[0].hex()
    if key not in _WORKER_STAGES:
        _WORKER_STAGES.clear()  # one run's stages at a time
        _WORKER_STAGES[key] = ray.get(factory[0])()
    stages = _WORKER_STAGES[key]
    with tempfile.TemporaryDirectory(prefix="v2v-segment-") as folder:
        path = os.path.join(folder, f"segment{suffix}")
        encode_segment(plan, segment, lambda: stages, encoding, path)
        return Path(path).read_bytes()


def _segment_container(encoding: Encoding) -> str:
    """MP4 keeps pts and dts exactly; Matroska for codecs MP4 can't hold."""
    with av.open(os.devnull, "w", format="mp4") as probe:
        return ".mp4" if encoding.codec in probe.supported_codecs else ".mkv"


def _run_local(
    plan: Plan, pending: list[Segment], make_stages: StageFactory, encoding: Encoding, done: Callable[[Segment], None],
    work: WorkFolder,
) -> None:
    for segment in pending:
        encode_segment(plan, segment, make_stages, encoding, work.segment_path(segment.number))
        done(segment)


def _run_ray(
    plan: Plan,
    pending: list[Segment],
    make_stages: StageFactory,
    encoding: Encoding,
    done: Callable[[Segment], None],
    work: WorkFolder,
    *,
    workers: int,
    address: str | None,
    retries: int,
) -> None:
    """Segments as Ray tasks, at most `workers` in flight; each result is saved as soon as it arrives."""
    ray = require("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else workers,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(_segment_bytes).options(num_cpus=1, num_gpus=gpus, max_retries=retries)
        factory = [ray.put(make_stages)]
        queue = list(pending)
        in_flight: dict[Any, Segment] = {}
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                segment = queue.pop(0)
                in_flight[task.remote(plan, segment, factory, encoding, work.suffix)] = segment
            finished, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in finished:
                segment = in_flight.pop(ref)
                try:
                    data = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                    raise V2VError(
                        f"segment {segment.number}: its worker died {retries + 1} times ({type(exc).__name__}); "
                        "giving up (finished segments are kept: fix the cause and rerun with --resume)"
                    ) from exc
                path = work.segment_path(segment.number)
                partial = Path(temp_name(str(path)))
                partial.write_bytes(data)
                os.replace(partial, path)
                done(segment)
    finally:
        if started_here:
            ray.shutdown()


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

    Segment files count time from their first frame (see `_KeepSegment`); here it goes back to the source's
    clock in `time_base` (the stages' output time base, with instants scaled by `stretch`), less `trim_start`.
    One-to-one stages must give every planned frame exactly once; other stages' frames must be unique and
    inside their segment's span.
    """
    time_base = time_base or plan.time_base
    parts = []
    for segment, path in zip(plan.segments, files, strict=True):
        start = plan.pts[segment.first] * plan.time_base * stretch
        end = math.inf if segment.end >= len(plan.pts) else plan.pts[segment.end] * plan.time_base * stretch
        expected = [round(p * plan.time_base / time_base) for p in plan.pts[segment.first : segment.end]]
        parts.append(Part(os.fspath(path), _ticks(start, time_base), expected if one_to_one else None,
                          f"segment {segment.number}", limit=None if end == math.inf else _ticks(end, time_base)))
    last = plan.segments[-1].end
    end = None if last == len(plan.pts) else plan.time(last) + plan.origin
    audio = AudioSource(plan.source, origin=plan.origin, start=trim_start, end=end) if stretch == 1 else None
    join_parts(parts, output, time_base=time_base, audio=audio,
               shift=output_shift(Timing(None, None, stretch), plan.origin, trim_start))


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
        raise UsageError("segmented runs (--resume, --work-dir, --backend ray) need a video file in and out")
    if backend not in ("local", "ray"):
        raise UsageError(f"--backend must be local or ray, got {backend!r}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
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
    work = WorkFolder(work_dir or default_work_dir(output), _segment_container(encoding))
    settings = {
        **(options or {}), "encoding": dataclasses.asdict(encoding), "segment_seconds": segment_seconds,
        "overlap": overlap, "start": start, "end": end, "max_frames": max_frames,
    }
    manifest = _start_or_resume(work, plan, json.loads(json.dumps(settings, default=str)), resume)
    states = {entry["number"]: entry for entry in manifest["segments"]}
    pending = [s for s in plan.segments if not _is_done(work, states[s.number], s)]
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
            _run_ray(
                plan, pending, make_stages, encoding, done, work, workers=workers, address=address, retries=retries
            )
        else:
            _run_local(plan, pending, make_stages, encoding, done, work)
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


def _is_done(work: WorkFolder, entry: dict[str, Any], segment: Segment) -> bool:
    """Done in the manifest and its file is there (a segment whose file went missing is redone)."""
    return entry.get("state") == "done" and work.segment_path(segment.number).exists()
