"""Stages and the runner: reader -> stages -> writer, overlapped through bounded queues.

Decoding runs in one thread, encoding in another, and the stages in the caller's thread (so Ctrl-C
lands where the work is). The queues hold a few frames each, so memory stays flat however long the clip.
An error in any thread is re-raised in the caller, and the output is then removed, never left half
written.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import numpy as np

from v2v.frames import Frame
from v2v.io.queues import End, Failed, put, read_into
from v2v.io.reader import Reader, open_source
from v2v.io.source_frames import SourceFrames
from v2v.io.writer import AudioSource, Encoding, Writer, open_writer

log = logging.getLogger(__name__)

QUEUE_FRAMES = 8


@dataclasses.dataclass(frozen=True)
class Context:
    """How many source frames a stage needs before and after a frame to produce it as a single pass would.

    Segmented runs decode `before` frames ahead of each segment (and `after` past its end), let the stage
    see them, and keep only the segment's own output. A stage whose state reaches further back (a running
    average, an attention anchor) declares the warm-up it wants and `exact=False`: runs are then segmented
    only when the user asks (`--resume`), never by default.
    """

    before: int = 0
    after: int = 0
    exact: bool = True  # False: state reaches further back than `before` (a segment then only approximates)
    # False: exact, but each segment redoes much work around its ends (a video model's windows), so a run is
    # segmented only when asked (`--resume`), not by default
    by_default: bool = True

    def __add__(self, other: Context) -> Context:
        """The context of two steps in a row: their needs add up."""
        return Context(self.before + other.before, self.after + other.after, self.exact and other.exact)


@dataclasses.dataclass(frozen=True)
class Timing:
    """The rate and time base of a stream of frames; a stage that makes or drops frames maps one to another."""

    rate: Fraction | None
    time_base: Fraction | None
    stretch: Fraction = Fraction(1)  # output instant = stretch * source instant (slow motion: audio can't follow)

    @property
    def audio_in_sync(self) -> bool:
        return self.stretch == 1


@runtime_checkable
class Stage(Protocol):
    """A step of a pipeline: frames in, frames out, lazily.

    A stage that needs context (the previous frame, a batch) keeps a bounded buffer and flushes it when
    its input ends; it never holds the whole clip. What a stage needs and does is declared by optional
    attributes, read through `context_of`, `is_one_to_one`, `output_timing` and `frames_out`:

    - `context: Context`: frames needed before/after each frame (default none);
    - `one_to_one: bool`: one output frame per input frame, same timestamps (default True);
    - `output_timing(timing: Timing) -> Timing`: the output's rate/time base (default unchanged);
    - `frames_out(count: int, rate: Fraction | None) -> int | None`: about how many frames a stage that is not
      one-to-one gives for `count` at `rate` (for the progress bar; default unknown);
    - `attach_source(source: SourceFrames) -> None`: the run's source, for a stage that reads frames ahead of or
      behind the one in hand (read through `attach_source`; a stage never reopens its input by path).
    """

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]: ...


def context_of(stages: Stage | Sequence[Stage]) -> Context:
    """The context a stage (or a chain of stages, whose needs add up) declares."""
    chain = [stages] if isinstance(stages, Stage) else list(stages)
    before = after = 0
    exact = by_default = True
    for stage in chain:
        context = getattr(stage, "context", None) or Context()
        before += context.before
        after += context.after
        exact = exact and context.exact
        by_default = by_default and context.by_default
    return Context(before, after, exact, by_default)


def is_one_to_one(stages: Stage | Sequence[Stage]) -> bool:
    chain = [stages] if isinstance(stages, Stage) else list(stages)
    return all(getattr(stage, "one_to_one", True) for stage in chain)


def attach_source(stages: Sequence[Any], source: SourceFrames) -> None:
    """Hand `source` (the run's input, read at any frame) to each of `stages` that declares `attach_source`."""
    for stage in stages:
        attach = getattr(stage, "attach_source", None)
        if attach is not None:
            attach(source)


def check_not_source(output: str | os.PathLike[str], reader: Reader) -> None:
    """Refuse an image-sequence output whose file names would overwrite the source's own images."""
    from v2v.errors import UsageError
    from v2v.io.reader import ImageSequenceReader
    from v2v.io.sequences import is_image_sequence, sequence_files

    if not (is_image_sequence(output) and isinstance(reader, ImageSequenceReader)):
        return
    if {path.resolve() for path in sequence_files(output)} & {path.resolve() for path in reader.files}:
        raise UsageError(f"{os.fspath(output)}: its file names would overwrite the source's images; "
                         "write to another folder or name pattern")


def output_shift(timing: Timing, origin: float, start: float) -> float:
    """Seconds taken off every output timestamp so that a run trimmed to start `start` seconds after the
    source's first frame (at `origin`) starts there; instants stretched by the stages move with them."""
    return float(timing.stretch) * (origin + start) - origin


def frames_out(stages: Sequence[Stage], count: int | None, rate: Fraction | None) -> int | None:
    """About how many frames `stages` give for `count` input frames at `rate` (None when a stage can't say)."""
    for stage in stages:
        if count is None:
            return None
        if not getattr(stage, "one_to_one", True):
            estimate = getattr(stage, "frames_out", None)
            count = estimate(count, rate) if estimate is not None else None
        rate = output_timing([stage], Timing(rate, None)).rate
    return count


def output_timing(stages: Sequence[Stage], timing: Timing) -> Timing:
    """The timing after `stages`: each stage that declares `output_timing` maps its input's to its output's."""
    for stage in stages:
        change = getattr(stage, "output_timing", None)
        if change is not None:
            timing = change(timing)
    return timing


class MapStage:
    """A stage from a function on one image (RGB uint8 (H, W, 3) in, the same contract out)."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray]) -> None:
        self.function = function

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            yield frame.with_image(self.function(frame.image))


def batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Lists of up to `size` consecutive frames (the last one may be shorter)."""
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def apply_stages(frames: Iterator[Frame], stages: Sequence[Stage]) -> Iterator[Frame]:
    for stage in stages:
        frames = stage.process(frames)
    return frames


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What a run did: frames read and written, wall time, and why reading stopped early (if it did)."""

    output: str
    frames_read: int
    frames_written: int
    seconds: float
    damage: str | None

    @property
    def fps(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0


def _drain(channel: queue.Queue[object], stop: threading.Event) -> Iterator[Frame]:
    """Frames from `channel` until its end marker; ends early when `stop` is set (a failure elsewhere)."""
    while True:
        try:
            item = channel.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if isinstance(item, End):
            return
        if isinstance(item, Failed):
            stop.set()
            raise item.error
        yield item  # type: ignore[misc]


class Progress:
    """Frames, fps and ETA on stderr (tqdm; silent when stderr is not a terminal or when disabled): the runner's,
    and that of commands that loop over frames themselves (`v2v metrics`)."""

    def __init__(self, total: int | None, enabled: bool, label: str, initial: int = 0) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="frame", desc=label, disable=None, dynamic_ncols=True,
                             leave=False)  # fmt: skip

    def update(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _write_from(
    writer: Writer,
    channel: queue.Queue[object],
    stop: threading.Event,
    progress: Progress,
    failures: list[BaseException],
) -> None:
    try:
        for frame in _drain(channel, stop):
            writer.write(frame)
            progress.update()
    except BaseException as error:
        failures.append(error)
        stop.set()


def _run_record(
    reader: Reader, output: str | os.PathLike[str], options: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What a resumable output (an image sequence) saves to recognise its run: the input's fingerprint and the
    options; None for other outputs, which keep nothing to resume."""
    from v2v.io.sequences import is_image_sequence

    if options is None or not is_image_sequence(output):
        return None
    from v2v.resume import fingerprint

    return {"input": fingerprint(reader.info.path, getattr(reader, "files", None)), "options": options}


def _restart_at(done: int, stages: Sequence[Stage]) -> int:
    """Where a run that finished `done` frames restarts reading: the stages' context before the next frame."""
    from v2v.errors import UsageError

    if not is_one_to_one(stages):
        raise UsageError.naming(
            "can't resume: these stages change the frame count, so the finished frames don't say where to restart; "
            "rerun with {overwrite} to start over"
        )
    context = context_of(stages)
    if not context.exact:
        log.warning("resuming at frame %d: the stages warm up on the %d frames before it, so what follows only "
                    "approximates an uninterrupted run", done, context.before)  # fmt: skip
    return max(0, done - context.before)


def run(
    source: str | os.PathLike[str] | Reader,
    stages: Sequence[Stage],
    output: str | os.PathLike[str] | Writer,
    *,
    overwrite: bool = False,
    encoding: Encoding | None = None,
    start: float = 0.0,
    end: float | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    start_number: int | None = None,
    resume: bool = False,
    keep_partial: bool = True,
    options: dict[str, Any] | None = None,
) -> RunReport:
    """Stream `source` through `stages` into `output` and return what happened.

    `source` is a path (video file, image folder, printf pattern) or an open reader; `stages` may be empty (a
    transcode); `output` is a path (video file or printf pattern) or an open writer. For paths, `start`/`end`
    (seconds), `max_frames`, `encoding` and `overwrite` apply; the source's audio and subtitles are copied into a
    video output. An image-sequence output numbers its files from `start_number` (default: as the source sequence
    does, else 1).
    Nothing is written at the output's name unless the whole run succeeds.

    An image-sequence output keeps the frames a stopped run finished (unless `keep_partial` is False), and
    `resume` continues that run: the stages get the frames from their declared context before the first
    unfinished one. `options` (what the frames depend on besides the input) must then be those of the first run.
    (A video file output resumes in segments: `v2v.run_segmented`.)
    """
    # 1. Open the ends; the output is checked (exists? writable?) before any frame is decoded. The writer
    #    takes the timing the stages declare, and the source's audio unless a stage stretches time.
    reader = source if not isinstance(source, (str, os.PathLike)) else open_source(
        source, start=start, end=end, max_frames=max_frames
    )
    if isinstance(output, (str, os.PathLike)):
        check_not_source(output, reader)
    timing = output_timing(stages, Timing(reader.info.fps, reader.info.time_base))
    audio = AudioSource.of(reader) if timing.audio_in_sync else None
    if not timing.audio_in_sync and any(s.kind in ("audio", "subtitle") for s in reader.info.streams):
        log.warning("audio and subtitles are dropped: they can't stay in sync with frames spread over a new duration")
    try:
        writer = output if not isinstance(output, (str, os.PathLike)) else open_writer(
            output, encoding=encoding, overwrite=overwrite, audio=audio, fps=timing.rate,
            shift=output_shift(timing, reader.start_time, reader.window.start),
            start_number=getattr(reader, "first_number", 1) if start_number is None else start_number,
            resume=resume, keep_partial=keep_partial, record=_run_record(reader, output, options),
        )  # fmt: skip
    except BaseException:
        reader.close()
        raise
    first = getattr(writer, "frames_done", 0)
    if first:
        try:
            first = _restart_at(first, stages)
            resumed = reader.starting_at(first)  # before close(): it reads the open stream's start time
        except BaseException:
            writer.abort()  # keeps the finished frames
            reader.close()
            raise
        reader.close()
        reader = resumed
    expected = reader.info.frame_count
    if max_frames is not None and expected is not None:
        expected = min(expected, max_frames)
    expected = frames_out(stages, expected, reader.info.fps)
    label = os.path.basename(os.fspath(output)) if isinstance(output, (str, os.PathLike)) else "v2v"
    bar = Progress(expected, progress, label, initial=first)
    source_frames = SourceFrames.of(reader)  # opens nothing until a stage reads from it
    attach_source(stages, source_frames)

    # 2. Start decode and encode threads around bounded queues.
    stop = threading.Event()
    decoded: queue.Queue[object] = queue.Queue(QUEUE_FRAMES)
    processed: queue.Queue[object] = queue.Queue(QUEUE_FRAMES)
    write_failures: list[BaseException] = []
    reading = threading.Thread(target=read_into, args=(reader, decoded, stop), name="v2v-decode", daemon=True)
    writing = threading.Thread(
        target=_write_from, args=(writer, processed, stop, bar, write_failures), name="v2v-encode", daemon=True
    )
    began = time.perf_counter()
    reading.start()
    writing.start()

    # 3. Run the stages here, handing frames to the encoder; then close (commit) or abort the output.
    try:
        for frame in apply_stages(_drain(decoded, stop), stages):
            if not put(processed, frame, stop):
                break
        put(processed, End(), stop)
        writing.join()
        if write_failures:
            raise write_failures[0]
        if audio is not None:
            audio.end = reader.stopped_at  # a window that ended early ends the audio there too
        if reader.frames_read == 0 and writer.frames_written == 0:
            from v2v.errors import InputError

            why = f" ({reader.damage})" if reader.damage else ""
            raise InputError.naming("{path}: no frame could be decoded{why}; its video stream is empty or damaged "
                                    "(or the {start}/{end} window holds no frame)", path=reader.info.path, why=why)
        writer.close()
    except BaseException:
        stop.set()
        writing.join(timeout=10)
        writer.abort()
        raise
    finally:
        stop.set()
        reading.join(timeout=10)
        reader.close()
        source_frames.close()
        bar.close()
    return RunReport(
        output=os.fspath(output) if isinstance(output, (str, os.PathLike)) else getattr(writer, "path", ""),
        frames_read=reader.frames_read,
        frames_written=writer.frames_written,
        seconds=time.perf_counter() - began,
        damage=reader.damage,
    )
