"""Bounded queues between threads: the pipeline's decode and encode threads and a side input's decode thread hand
frames over through them, and each can be torn down (`stop`) while the other side has stopped taking."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable


class End:
    """Marks the end of a queue's frames."""


class Failed:
    """An error raised in the thread that fills a queue, to be re-raised by the one that empties it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def put(channel: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put unless `stop` is set; False when the run is being torn down."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def read_into(frames: Iterable[object], channel: queue.Queue[object], stop: threading.Event) -> None:
    """Put every frame, then `End` (or `Failed` with what went wrong); a decode thread's whole job."""
    try:
        for frame in frames:
            if not put(channel, frame, stop):
                return
        put(channel, End(), stop)
    except BaseException as error:  # re-raised in the thread that takes the frames
        put(channel, Failed(error), stop)
