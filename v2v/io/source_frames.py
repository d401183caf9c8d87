"""`SourceFrames`: a clip read at any of its frames, for a stage that needs frames ahead of or behind the one in hand.

`v2v.pipeline.run` makes one from its reader and hands it to every stage that asks (`attach_source`), so no stage
reopens its input by path: a mask carried backward from frame N, stabilize's look-ahead, a frame's number in the
whole clip. Nothing is opened until a stage reads. Frames are numbered over the whole clip from its first frame (0),
whatever window the run reads; `number(frame)` says which one a frame the reader gave is.

A video file is opened once: its frame times come from one packet scan, and frames are decoded from a seek, where
reading on from the frame the last read stopped at needs no seek. An image sequence reads its files.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from v2v.errors import InputError
from v2v.frames import Frame
from v2v.io.container import VideoPackets, open_container, scan_video_packets
from v2v.io.reader import Reader, TimeWindow, frame_to_rgb, read_image
from v2v.io.sequences import DEFAULT_SEQUENCE_FPS, is_image_sequence, sequence_files


class SourceFrames:
    """Random access to the frames of a video file, image folder or printf pattern (`fps`: an image sequence's rate,
    default 25). Use `with`, or close(); a read after close() opens the clip again."""

    def __init__(self, path: str | os.PathLike[str], fps: Fraction | float | None = None) -> None:
        self.path = os.fspath(path)
        self.sequence = is_image_sequence(self.path)
        self.rate = Fraction(fps) if fps else DEFAULT_SEQUENCE_FPS  # image sequences only
        self._files = sequence_files(self.path) if self.sequence else []
        self._packets: VideoPackets | None = None
        self._container: av.container.InputContainer | None = None
        self._decoded: Iterator[av.VideoFrame] = iter(())
        self._next = -1  # the frame `_decoded` gives next (-1: none, seek first)
        self._skip_before = 0  # after a seek: pts of the wanted frame (the ones before it are skipped)
        self._last: tuple[int, np.ndarray] | None = None  # the last frame `image` gave

    @classmethod
    def of(cls, reader: Reader) -> SourceFrames:
        """The clip a reader streams (all of it, whatever its window)."""
        return cls(reader.info.path, reader.info.fps)

    # -- times -----------------------------------------------------------------------------------------------
    def _scan(self) -> VideoPackets:
        if self._packets is None:
            self._packets = scan_video_packets(self._open())
            self._next = -1  # the scan read the container to its end
        return self._packets

    @property
    def stamps(self) -> list[int]:
        """Every frame's pts, in presentation order (image sequences: the file's position)."""
        return list(range(len(self._files))) if self.sequence else self._scan().pts

    @property
    def times(self) -> list[float]:
        """Every frame's time in seconds from the clip's start (where readers count `--start` from)."""
        if self.sequence:
            return [float(i / self.rate) for i in range(len(self._files))]
        return self._scan().seconds()

    def __len__(self) -> int:
        return len(self.stamps)

    def number(self, frame: Frame) -> int:
        """Which frame of the whole clip a frame read from it is (counted from 0), from its timestamp."""
        if frame.pts is None:
            return frame.source_index if frame.source_index is not None else frame.index
        if self.sequence:
            return int(frame.pts)  # image sequences stamp each frame with its file's position
        return bisect.bisect_left(self.stamps, frame.pts)

    def time_of(self, index: int, start: float = 0.0) -> float:
        """Seconds from the clip's start to its frame `index`, counting from the first frame at or after `start`:
        where a reader must start to deliver that frame first (e.g. a side input of a later segment)."""
        if self.sequence:
            return float((math.ceil(start * self.rate - 1e-9) + index) / self.rate)
        times = self.times
        position = TimeWindow(start).span(times)[0] + index
        if position >= len(times):
            raise InputError(f"{self.path}: has no frame {index} after {start} s (it has {len(times)} frames)")
        return times[position]

    # -- frames ----------------------------------------------------------------------------------------------
    def frames(self, first: int, stop: int | None = None) -> Iterator[Frame]:
        """The clip's frames `first` .. `stop` - 1 (default: to its end), each numbered by its place in the clip
        (`index`, `source_index`). Ends early where decoding stops (a damaged file)."""
        stop = len(self) if stop is None else min(stop, len(self))
        for number in range(max(0, first), stop):
            if self.sequence:
                yield Frame(read_image(self._files[number]), number, number, 1 / self.rate)
                continue
            if self._next != number:  # another read moved the decoder: seek back to this one
                self._seek(number)
            decoded = self._decode_next()
            if decoded is None:
                return
            yield Frame(frame_to_rgb(decoded), number, decoded.pts, self._open().streams.video[0].time_base)

    def image(self, index: int) -> np.ndarray:
        """Frame `index` of the clip (RGB uint8); the last one asked is kept, so asking again costs nothing."""
        if self._last is None or self._last[0] != index:
            frame = next(self.frames(index, index + 1), None)
            if frame is None:
                raise InputError(f"{self.path}: frame {index} could not be decoded")
            self._last = (index, frame.image)
        return self._last[1]

    def _open(self) -> av.container.InputContainer:
        if self._container is None:
            self._container = open_container(self.path)
            self._container.streams.video[0].thread_type = "AUTO"
            self._next = -1
        return self._container

    def _seek(self, number: int) -> None:
        container = self._open()
        stream = container.streams.video[0]
        self._skip_before = self.stamps[number]
        container.seek(self._skip_before, stream=stream, backward=True, any_frame=False)
        self._decoded = container.decode(stream)
        self._next = number

    def _decode_next(self) -> av.VideoFrame | None:
        try:
            for decoded in self._decoded:
                if decoded.pts is not None and decoded.pts < self._skip_before:
                    continue  # between the keyframe the seek found and the frame wanted
                self._next += 1
                return decoded
        except av.error.FFmpegError:
            pass
        self._next = -1
        return None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._decoded, self._next, self._last = iter(()), -1, None

    def __enter__(self) -> SourceFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def time_of_frame(path: str | os.PathLike[str], index: int, start: float = 0.0, fps: Fraction | None = None) -> float:
    """`SourceFrames.time_of` of a clip by its path (a side input, which a run reads by its own path)."""
    with SourceFrames(path, fps) as clip:
        return clip.time_of(index, start)
