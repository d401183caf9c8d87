"""Writers: video files through PyAV, and image sequences (`out/%05d.png`); `open_writer` opens either.

A writer never touches the output's final name until the output is complete: it writes a hidden
temporary file (or folder) beside it and renames it into place in `close()`. `abort()` removes what was
written. An existing output is refused unless `overwrite` is set, and that is checked before any work.
An image sequence's finished images are each whole, so a run that stops can be resumed from them.

Audio and subtitle streams of the source are copied packet for packet (no re-encode), interleaved with
the video as it is written, so nothing is held in memory and the bytes are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import av
import numpy as np

from v2v.errors import InputError, OutputError, OutputExistsError, UsageError, V2VError
from v2v.frames import Frame, check_image
from v2v.io.sequences import is_image_sequence, pattern_regex, sequence_files
from v2v.resume import check_same_run

if TYPE_CHECKING:
    from v2v.io.reader import Reader

log = logging.getLogger(__name__)

DEFAULT_FPS = Fraction(25)
# Pixel formats that keep RGB exactly, for lossless codecs.
_LOSSLESS_PIX_FMT = {"ffv1": "bgr0", "png": "rgb24", "qtrle": "rgb24", "libx264rgb": "rgb24"}
_IMAGE_CODECS = {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How the video stream is encoded. `crf`/`preset` go to codecs that take them (x264, x265, ...)."""

    codec: str = "libx264"
    crf: float | None = 18
    preset: str | None = "medium"
    pix_fmt: str | None = None  # None: yuv420p where the codec takes it, else its lossless RGB format

    def resolved_pix_fmt(self) -> str:
        if self.pix_fmt:
            return self.pix_fmt
        if self.codec in _LOSSLESS_PIX_FMT:
            return _LOSSLESS_PIX_FMT[self.codec]
        formats = [f.name for f in _video_encoder(self.codec).video_formats or ()]
        return "yuv420p" if "yuv420p" in formats or not formats else formats[0]

    def codec_options(self) -> dict[str, str]:
        _video_encoder(self.codec)
        names = {option.name for option in av.CodecContext.create(self.codec, "w").supported_options.private}
        options = {}
        if self.crf is not None and "crf" in names:
            options["crf"] = f"{self.crf:g}"
        if self.preset and "preset" in names:
            options["preset"] = self.preset
        return options


def _video_encoder(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except ValueError as exc:  # UnknownCodecError
        raise UsageError(f"unknown video encoder {name!r}; `ffmpeg -encoders` lists them") from exc
    if codec.type != "video":
        raise UsageError(f"{name!r} is not a video encoder")
    return codec


def check_output(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an output that exists (without `overwrite`) or whose folder can't be written, before work."""
    text = os.fspath(path)
    if is_image_sequence(text):
        folder = os.path.dirname(text) or "."
        if sequence_files(text) and not overwrite:
            raise OutputExistsError.naming("{path}: files of this sequence exist already; pass {overwrite} to replace "
                                            "them", path=text)
        parent = folder if os.path.isdir(folder) else os.path.dirname(os.path.abspath(folder))
    else:
        if os.path.isdir(text):
            raise OutputError(f"{text}: is a folder; give a file name such as {os.path.join(text, 'out.mp4')}")
        if os.path.exists(text) and not overwrite:
            raise OutputExistsError.naming("{path}: exists already; pass {overwrite} to replace it", path=text)
        parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise OutputError(f"{text}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{text}: folder {parent} is not writable")


@contextlib.contextmanager
def writing_errors(path: str) -> Iterator[None]:
    """Turn FFmpeg and file-system failures while writing into one OutputError line."""
    try:
        yield
    except V2VError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise OutputError(f"{path}: writing failed ({reason})") from exc


def discard_partial(partial: str, *closables: object) -> None:
    """Close what was writing `partial` (a half-written container may refuse: it goes anyway) and delete it."""
    for closable in closables:
        try:
            if closable is not None:
                closable.close()  # type: ignore[attr-defined]
        except Exception:
            pass
    if os.path.exists(partial):
        os.unlink(partial)


def temp_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(name)
    # keep the suffix: FFmpeg chooses the container from it
    return os.path.join(folder, f".{stem}.v2v-partial-{os.getpid()}{suffix}")


def _even_pad(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pad (by repeating the last row/column) to the encoder's size; a no-op when sizes match."""
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


@dataclasses.dataclass
class AudioSource:
    """Where an output's audio and subtitles come from: the streams of `path`, copied packet for packet.

    `origin` is the source time (seconds) of its first video frame; the copy starts `start` seconds after it
    and stops at `end` (source seconds; None: the file's end). The run sets `end` once reading has stopped.
    """

    path: str
    origin: float = 0.0
    start: float = 0.0
    end: float | None = None

    @classmethod
    def of(cls, reader: Reader) -> AudioSource | None:
        """The audio that belongs with a reader's frames (None for image sequences, which have none)."""
        from v2v.io.reader import VideoFileReader

        if not isinstance(reader, VideoFileReader):
            return None
        return cls(reader.path, origin=reader.start_time, start=reader.window.start)


class StreamCopier:
    """Copies a source's audio and subtitle packets into the output, untouched, in step with the video.

    `origin` is the source time (seconds) of its first video frame and `trim_start` how far after it the
    output begins: packets before that are dropped and the rest shifted back by `trim_start`, as the video is.
    """

    def __init__(
        self, output: av.container.OutputContainer, source: str, *, origin: float = 0.0, trim_start: float = 0.0
    ) -> None:
        self._output = output
        self._input = av.open(source, metadata_errors="ignore")
        # untrimmed: everything, including packets before the first frame (AAC priming has pts < 0)
        self.start = origin + trim_start if trim_start > 0 else -math.inf
        self.shift = trim_start
        self._map: dict[int, av.stream.Stream] = {}
        wanted = []
        for stream in self._input.streams:
            if stream.type not in ("audio", "subtitle"):
                continue
            codec = stream.codec_context.name if stream.codec_context else "unknown"
            if codec not in output.supported_codecs:
                where = os.path.splitext(output.name)[1] or output.format.name
                if stream.type == "audio":
                    raise OutputError(
                        f"{output.name}: a {where} file can't hold the source's {codec} audio; "
                        "choose a container that can, such as .mkv"
                    )
                log.warning("subtitle stream %d (%s) can't be stored in %s; not copied", stream.index, codec, where)
                continue
            self._map[stream.index] = output.add_stream_from_template(stream)
            wanted.append(stream)
        self._packets = self._input.demux(wanted) if wanted else iter(())
        if wanted and trim_start > 0:
            self._input.seek(int(self.start * av.time_base), backward=True)
        self._pending: av.Packet | None = None

    def copy_until(self, until: float) -> None:
        """Mux every packet that starts before `until` (source seconds)."""
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if not packet.size:  # demuxer flush packets carry nothing
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            time = float(stamp * packet.time_base) if stamp is not None else self.start
            if time >= until:
                self._pending = packet
                return
            if time < self.start - 1e-6:
                continue
            if self.shift:
                offset = round(self.shift / packet.time_base)
                packet.pts = None if packet.pts is None else packet.pts - offset
                packet.dts = None if packet.dts is None else packet.dts - offset
            packet.stream = self._map[packet.stream_index]
            self._output.mux(packet)

    def close(self) -> None:
        self._input.close()


class VideoFileWriter:
    """Encodes frames into a video file, copying audio/subtitles from `audio` when given.

    Sizes are fixed by the first frame. Frames keep their pts/time_base (variable frame rate survives), less
    `shift` seconds (the output starts where a trimmed source's window starts); frames without timing are
    placed at `fps`, which is also the stream's nominal rate.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoding: Encoding | None = None,
        overwrite: bool = False,
        audio: AudioSource | None = None,
        fps: Fraction | None = None,
        shift: float = 0.0,
    ) -> None:
        self.path = os.fspath(path)
        self.encoding = encoding or Encoding()
        self.pix_fmt = self.encoding.resolved_pix_fmt()
        self._options = self.encoding.codec_options()
        check_output(self.path, overwrite)
        self.audio = audio
        self.fps = fps or DEFAULT_FPS
        self.shift = shift
        self._temp = temp_name(self.path)
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._copier: StreamCopier | None = None
        self._size: tuple[int, int] | None = None
        self._pts_shift = 0
        self.frames_written = 0

    def __enter__(self) -> VideoFileWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.abort() if exc_type is not None else self.close()

    def _open(self, frame: Frame) -> None:
        try:
            self._container = av.open(self._temp, "w")
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.path}: can't create this file ({exc})") from exc
        time_base = frame.time_base or 1 / self.fps
        try:
            stream = self._container.add_stream(self.encoding.codec, rate=self.fps)
        except ValueError as exc:
            raise OutputError(f"{self.path}: this container can't hold {self.encoding.codec} video") from exc
        width, height = self._coded_size(frame.width, frame.height)
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = self._options
        stream.thread_type = "AUTO"
        self._stream, self._size = stream, (frame.width, frame.height)
        self._pts_shift = round(self.shift / time_base)
        if self.audio is not None:
            self._copier = StreamCopier(
                self._container, self.audio.path, origin=self.audio.origin, trim_start=self.audio.start
            )

    def _coded_size(self, width: int, height: int) -> tuple[int, int]:
        fmt = av.VideoFormat(self.pix_fmt)
        step_w = 2 if fmt.chroma_width(2) == 1 else 1
        step_h = 2 if fmt.chroma_height(2) == 1 else 1
        coded = (math.ceil(width / step_w) * step_w, math.ceil(height / step_h) * step_h)
        if coded != (width, height):
            log.warning(
                "%dx%d padded to %dx%d: %s needs even sizes (use --pix-fmt yuv444p or --codec ffv1 to keep it)",
                width, height, *coded, self.pix_fmt,
            )
        return coded

    def write(self, frame: Frame) -> None:
        check_image(frame.image)
        if self._stream is None:
            with writing_errors(self.path):
                self._open(frame)
        assert self._stream is not None and self._container is not None
        if (frame.width, frame.height) != self._size:
            width, height = self._size or (0, 0)
            raise InputError(
                f"frame {frame.index} is {frame.width}x{frame.height} but the video started at {width}x{height}; "
                "a video keeps one size (write an image sequence such as out/%05d.png instead)"
            )
        picture = av.VideoFrame.from_ndarray(
            _even_pad(frame.image, self._stream.width, self._stream.height), format="rgb24"
        )
        time_base = self._stream.codec_context.time_base
        if frame.pts is None:
            picture.pts = round(frame.index / self.fps / time_base)
        elif frame.time_base is not None and frame.time_base != time_base:
            raise InputError(f"frame {frame.index} has time base {frame.time_base}, the video {time_base}; "
                             "a stage that retimes frames must give them all one time base")
        else:
            picture.pts = frame.pts - self._pts_shift
        picture.time_base = time_base
        with writing_errors(self.path):
            if self._copier is not None and frame.time is not None:
                self._copier.copy_until(frame.time)
            self._mux(self._stream.encode(picture))
        self.frames_written += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        assert self._container is not None
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio, and move the file into place."""
        if self._container is None:
            raise OutputError(f"{self.path}: no frames were written, so no video was made")
        try:
            assert self._stream is not None
            with writing_errors(self.path):
                self._mux(self._stream.encode(None))
                if self._copier is not None:
                    end = self.audio.end if self.audio is not None else None
                    self._copier.copy_until(math.inf if end is None else end)
                    self._copier.close()
                self._container.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self._temp, self.path)
        self._container = None

    def abort(self) -> None:
        """Forget everything written; the final name is never touched."""
        discard_partial(self._temp, self._copier, self._container)
        self._container = None


class ImageSequenceWriter:
    """Writes one image a frame, named by a printf pattern (`out/%05d.png`, numbered from `start_number`, 1 by
    default as FFmpeg does).

    Images go to a hidden work folder beside them (`.PATTERN.v2v-partial`), each one whole (written under a
    temporary name, then renamed), and are moved into place by close(). A run that stops keeps the finished ones
    there (unless `keep_partial` is False): the same run with `resume` writes only the frames after them
    (`frames_done`; the frames before arrive again as context and are dropped). `record` ({"input": the input's
    fingerprint, "options": what else the frames depend on}) is saved with them, and a resume with another
    record is refused.
    """

    RECORD = "v2v-run.json"

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        start_number: int = 1,
        resume: bool = False,
        keep_partial: bool = True,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.pattern = os.fspath(pattern)
        self.start_number = start_number
        check_output(self.pattern, overwrite)
        self.folder, self.name = os.path.split(os.path.abspath(self.pattern))
        pattern_regex(self.name)  # raises for a pattern without %d
        suffix = os.path.splitext(self.name)[1].lower()
        if suffix not in _IMAGE_CODECS:
            choices = ", ".join(_IMAGE_CODECS)
            raise UsageError(f"{self.pattern}: can't write {suffix or 'suffix-less'} images; use one of {choices}")
        self._codec = _IMAGE_CODECS[suffix]
        self._overwrite = overwrite
        self._keep_partial = keep_partial
        record = record or {}
        self._record = {
            "input": record.get("input", {"size": None, "sha256_head_tail": None}),
            "options": {**record.get("options", {}), "start_number": start_number},
        }
        self._made_folder = False
        self.work = Path(self.folder) / f".{self.name}.v2v-partial"
        self.frames_done = self._finished_before(resume, overwrite)
        self.frames_written = self.frames_done

    def _finished_before(self, resume: bool, overwrite: bool) -> int:
        """How many frames an earlier run of this output finished (0 without one, or when starting over)."""
        if not self.work.is_dir():
            return 0
        done = 0
        while (self.work / (self.name % (self.start_number + done))).is_file():
            done += 1
        if not resume:
            if not overwrite:
                raise OutputError.naming(
                    "{work} holds {done} finished frames of an earlier run of {pattern}; pass {resume} to continue "
                    "it, or {overwrite} to start over", work=self.work, done=done, pattern=self.pattern,
                )
            shutil.rmtree(self.work)
            return 0
        try:
            saved = json.loads((self.work / self.RECORD).read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"{self.work} has no readable record of its run ({exc}); remove it to start over"
            ) from exc
        check_same_run(self.work, saved, self._record["input"], self._record["options"])
        log.warning("resuming: %d frames of %s were finished already", done, self.pattern)
        return done

    def __enter__(self) -> ImageSequenceWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.abort() if exc_type is not None else self.close()

    def write(self, frame: Frame) -> None:
        if frame.index < self.frames_done:
            return  # context before the frames a resumed run still has to write
        check_image(frame.image)
        if not self.work.is_dir():
            if not os.path.isdir(self.folder):
                os.mkdir(self.folder)
                self._made_folder = True
            self.work.mkdir()
            (self.work / self.RECORD).write_text(json.dumps(self._record, indent=1, default=str))
        context = av.CodecContext.create(self._codec, "w")
        context.width, context.height = frame.width, frame.height
        context.pix_fmt = "yuvj444p" if self._codec == "mjpeg" else "rgb24"
        context.time_base = Fraction(1, 25)
        if self._codec == "mjpeg":
            context.options = {"qmin": "1", "qmax": "2"}
        picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        data = b"".join(bytes(p) for p in [*context.encode(picture), *context.encode(None)])
        temporary = self.work / ".writing"
        temporary.write_bytes(data)
        os.replace(temporary, self.work / (self.name % (self.frames_written + self.start_number)))
        self.frames_written += 1

    def _finished(self) -> list[Path]:
        return sorted(path for path in self.work.iterdir() if not path.name.startswith((".", self.RECORD)))

    def close(self) -> None:
        if self.frames_written == 0:
            raise OutputError(f"{self.pattern}: no frames were written, so no images were made")
        if self._overwrite:
            for old in sequence_files(self.pattern):
                old.unlink()
        for image in self._finished():
            os.replace(image, os.path.join(self.folder, image.name))
        shutil.rmtree(self.work)

    def abort(self) -> None:
        if not self.work.is_dir():
            return
        kept = len(self._finished())
        if kept and self._keep_partial:
            log.warning("kept %d finished frames in %s: run the same command with --resume to continue", kept,
                        self.work)  # fmt: skip
            return
        shutil.rmtree(self.work, ignore_errors=True)
        if self._made_folder:
            try:
                os.rmdir(self.folder)
            except OSError:
                pass


@runtime_checkable
class Writer(Protocol):
    """What the pipeline needs of an output: frames in order, then close (commit) or abort (remove all)."""

    frames_written: int

    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def open_writer(
    path: str | os.PathLike[str],
    *,
    encoding: Encoding | None = None,
    overwrite: bool = False,
    audio: AudioSource | None = None,
    fps: Fraction | None = None,
    shift: float = 0.0,
    start_number: int = 1,
    resume: bool = False,
    keep_partial: bool = True,
    record: dict[str, Any] | None = None,
) -> Writer:
    """A writer for a video file, or for an image sequence when `path` is a printf pattern.

    `audio` says whose audio and subtitles to copy (video files only); `fps` is the nominal rate; `shift`
    (seconds) is taken off every timestamp. An image sequence numbers its files from `start_number`, and
    `resume`, `keep_partial` and `record` say how it keeps finished frames for a resume (`ImageSequenceWriter`).
    """
    if is_image_sequence(path):
        return ImageSequenceWriter(
            path, overwrite=overwrite, start_number=start_number, resume=resume, keep_partial=keep_partial,
            record=record,
        )  # fmt: skip
    if resume:
        raise UsageError(f"{os.fspath(path)}: resuming a video file output is done in segments (v2v.run_segmented)")
    return VideoFileWriter(path, encoding=encoding, overwrite=overwrite, audio=audio, fps=fps, shift=shift)
