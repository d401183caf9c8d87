"""Writing: video files through PyAV, and image sequences (`out/%05d.png`).

A writer never touches the output's final name until the output is complete: it writes a hidden
temporary file (or folder) beside it and renames it into place in `close()`. `abort()` removes what was
written. An existing output is refused unless `overwrite` is set, and that is checked before any work.

Audio and subtitle streams of the source are copied packet for packet (no re-encode), interleaved with
the video as it is written, so nothing is held in memory and the bytes are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import av
import numpy as np

from v2v.errors import InputError, OutputError, OutputExistsError, UsageError, V2VError
from v2v.frames import Frame, check_image
from v2v.io.sequences import is_image_sequence, sequence_files

if TYPE_CHECKING:
    from v2v.io.reader import Reader
    from v2v.io.remux import StreamCopier

log = logging.getLogger(__name__)

DEFAULT_FPS = Fraction(25)
# Pixel formats that keep RGB exactly, for lossless codecs.
_LOSSLESS_PIX_FMT = {"ffv1": "bgr0", "png": "rgb24", "qtrle": "rgb24", "libx264rgb": "rgb24"}


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
            raise OutputExistsError(f"{text}: files of this sequence exist already; pass --overwrite to replace them")
        parent = folder if os.path.isdir(folder) else os.path.dirname(os.path.abspath(folder))
    else:
        if os.path.isdir(text):
            raise OutputError(f"{text}: is a folder; give a file name such as {os.path.join(text, 'out.mp4')}")
        if os.path.exists(text) and not overwrite:
            raise OutputExistsError(f"{text}: exists already; pass --overwrite to replace it")
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
        from v2v.io.remux import StreamCopier

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
        from v2v.io.sequences import ImageSequenceWriter

        return ImageSequenceWriter(
            path, overwrite=overwrite, start_number=start_number, resume=resume, keep_partial=keep_partial,
            record=record,
        )  # fmt: skip
    if resume:
        raise UsageError(f"{os.fspath(path)}: resuming a video file output is done in segments (v2v.run_segmented)")
    return VideoFileWriter(path, encoding=encoding, overwrite=overwrite, audio=audio, fps=fps, shift=shift)
