"""`SideInput`: the one way a second video (a guide, control maps, masks) enters a stage.

It is read beside the main clip in its own decode thread, through a bounded queue, and each main frame gets
the side frame that belongs with it:

- `align="time"` (default): the side frame shown at the same moment (the last one that starts at or before
  it), times counted from each clip's first frame (`main_origin` is the main clip's, in source seconds).
  `--start`/`--end` and segments need nothing more: a frame's own timestamp says where it is.
- `align="index"`: side frame k for the main frame whose `source_index` is k, counted from the side clip's
  first frame in `window` (give the main clip's window to walk both in step).

Policies, chosen by the stage and stated in its docs:

- a side clip that ends first: `shorter="error"` (one line naming both counts) or `"hold"` (repeat its last
  frame, logged once);
- a side clip that goes on: ignored, or `ends_with_main()` tells the stage so it can refuse;
- another size: `size="error"` (one line), `"resize"` (bilinear to the main frame's size, logged once) or
  `"keep"` (as it is: the stage scales what it derives from it).

Asking for an earlier frame, or one far ahead, reopens the clip at that point (a seek), so keyframe mode and
previews can ask out of order; memory is the queue's few frames.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

from v2v.errors import InputError, UsageError
from v2v.frames import Frame
from v2v.io.queues import End, Failed, read_into
from v2v.io.reader import Reader, TimeWindow, open_source

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4
SEEK_AHEAD_SECONDS = 2.0  # further than this ahead, reopening at the target beats decoding through
SIZE_POLICIES = ("error", "resize", "keep")
TIME_TOLERANCE = 0.002  # seconds: two clips' time bases round one instant differently by less than this


class SideInput:
    """A second clip read beside the main one; `frame_for(frame)` gives the side image for a main frame."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        what: str = "side input",
        align: str = "time",
        main_origin: float = 0.0,
        window: TimeWindow | None = None,
        shorter: str = "error",
        size: str = "error",
    ) -> None:
        if align not in ("time", "index") or shorter not in ("error", "hold") or size not in SIZE_POLICIES:
            raise UsageError(f"{what}: align must be time or index, shorter error or hold, size error, resize or keep")
        self.path, self.what = os.fspath(path), what
        self.align, self.main_origin, self.window = align, main_origin, window or TimeWindow()
        self.shorter, self.size = shorter, size
        self._reader: Reader | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_FRAMES)
        self._stop = threading.Event()
        self._current: Frame | None = None  # the last side frame taken
        self._next: Frame | None = None  # the one after it, looked at but not taken
        self._ended = False
        self._held = self._resized = False
        with open_source(self.path) as probe:  # fails now, before the main clip is decoded
            self.info = probe.info
            self.origin = probe.start_time

    # -- reading -------------------------------------------------------------------------------------------
    def _open(self, start: float, first_index: int = 0) -> None:
        """(Re)start the decode thread at `start` seconds from the side clip's first frame."""
        self.close()
        window = self.window
        if self.align == "time":
            window = TimeWindow(start=max(0.0, start))
        elif first_index:
            from v2v.io.source_frames import time_of_frame

            begin = time_of_frame(self.path, first_index, window.start)
            left = None if window.max_frames is None else window.max_frames - first_index
            if left is not None and left < 1:
                self._reader, self._ended = None, True
                return
            window = TimeWindow(start=begin, end=window.end, max_frames=left)
        self._reader = open_source(self.path, start=window.start, end=window.end, max_frames=window.max_frames)
        self._index = first_index
        self._stop = threading.Event()
        self._queue = queue.Queue(QUEUE_FRAMES)
        self._current = self._next = None
        self._ended = False
        self._thread = threading.Thread(target=read_into, args=(self._reader, self._queue, self._stop),
                                        name="v2v-side-input", daemon=True)
        self._thread.start()

    def _read(self) -> Frame | None:
        if self._ended or self._reader is None:
            return None
        item = self._queue.get()
        if isinstance(item, Failed):
            raise item.error
        if isinstance(item, End):
            self._ended = True
            return None
        frame: Frame = item  # type: ignore[assignment]
        return frame

    def _peek(self) -> Frame | None:
        if self._next is None:
            self._next = self._read()
        return self._next

    def _take(self) -> Frame | None:
        frame, self._next = self._peek(), None
        if frame is not None:
            self._current = frame
        return frame

    def _seconds(self, frame: Frame, origin: float) -> float:
        return (frame.time if frame.time is not None else frame.index / float(self.info.fps or 25)) - origin

    # -- what stages call --------------------------------------------------------------------------------
    def frame_for(self, frame: Frame) -> np.ndarray:
        """The side image (RGB uint8, the main frame's size under `size="resize"`) that goes with `frame`."""
        if self.align == "time":
            found = self._by_time(frame)
        else:
            found = self._by_index(frame.source_index if frame.source_index is not None else frame.index)
        if found is None:
            if self.shorter == "error" or self._current is None:
                raise InputError(f"{self.what} {self.path} ends before the video does (it has no frame for frame "
                                 f"{frame.index}); give one that covers the whole clip")
            if not self._held:
                log.warning("%s %s ends before the video; its last frame is held", self.what, self.path)
                self._held = True
            found = self._current
        return self._fit(found.image, frame)

    def _by_time(self, frame: Frame) -> Frame | None:
        target = self._seconds(frame, self.main_origin)
        step = 1 / float(self.info.fps or 25)
        tolerance = min(step / 4, TIME_TOLERANCE)  # the frame shown at that moment; rounding of time bases aside
        here = None if self._current is None else self._seconds(self._current, self.origin)
        if self._reader is None or (here is not None and target < here - tolerance) or (
            here is not None and target > here + SEEK_AHEAD_SECONDS
        ):
            self._open(target - tolerance)
        while (after := self._peek()) is not None and self._seconds(after, self.origin) <= target + tolerance:
            self._take()
        if self._current is None or (
            self._peek() is None and self._seconds(self._current, self.origin) + step <= target + tolerance
        ):
            return None  # the side clip's last frame was over before this instant
        return self._current

    def at_index(self, index: int) -> np.ndarray:
        """Side frame `index` of the window as it is (no size policy): for callers that resize themselves."""
        found = self._by_index(index)
        if found is None:
            raise InputError(f"{self.what} {self.path} has {self._index} frames, the video has more; "
                             "give one frame per video frame")
        return found.image

    def _by_index(self, wanted: int) -> Frame | None:
        if self._reader is None or wanted < self._index - 1 or wanted > self._index + 50:
            self._open(0.0, first_index=wanted)
            self._index = wanted
        while self._index <= wanted:
            if self._take() is None:
                return None
            self._index += 1
        return self._current

    def ends_with_main(self, last: Frame) -> bool:
        """Whether the side clip has no frame after the main clip's `last` frame (call once the main clip ends)."""
        if self.align == "index":
            return self._peek() is None
        after = self._peek()
        if after is None:
            return True
        return self._seconds(after, self.origin) <= self._seconds(last, self.main_origin) + TIME_TOLERANCE

    def _fit(self, image: np.ndarray, like: Frame) -> np.ndarray:
        if image.shape == like.image.shape or self.size == "keep":
            return image
        if self.size == "error":
            raise InputError(f"size differs: {self.what} {self.path} is {image.shape[1]}x{image.shape[0]} but the "
                             f"video is {like.width}x{like.height}; give one of the same size")
        if not self._resized:
            log.warning("%s %s is %dx%d; resized to the video's %dx%d", self.what, self.path, image.shape[1],
                        image.shape[0], like.width, like.height)
            self._resized = True
        import cv2

        return cv2.resize(image, (like.width, like.height), interpolation=cv2.INTER_LINEAR)

    def frames(self) -> Iterator[Frame]:
        """The side clip's frames in its window, in order (for checks that walk it whole)."""
        with open_source(self.path, start=self.window.start, end=self.window.end,
                         max_frames=self.window.max_frames) as reader:
            yield from reader

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> SideInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        """Pickled (a Ray worker) without its thread and reader; it reopens where it is used."""
        state = self.__dict__.copy()
        state.update(_reader=None, _thread=None, _queue=None, _stop=None, _current=None, _next=None, _ended=False)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._queue, self._stop = queue.Queue(QUEUE_FRAMES), threading.Event()
