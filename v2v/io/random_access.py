"""Random access to a video's frames by index, for stages that look out of order (keyframe choice, previews).

Streaming (`v2v.io.reader`) is the way to process a clip; this is for picking a few frames. decord is used when
it is installed (fast seeks through its own index); otherwise PyAV seeks to the nearest keyframe and decodes
forward. Either way frames follow the pixel contract (RGB uint8 (H, W, 3)) and come out upright.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from v2v.errors import InputError
from v2v.io.probe import frame_timestamps, open_container
from v2v.io.reader import VideoFileReader, frame_to_rgb

log = logging.getLogger(__name__)


class FrameIndex:
    """`index[i]` is frame i of the video at `path`; `len(index)` the number of frames.

    `backend` is "decord", "pyav", or None to take decord when it is importable.
    """

    def __init__(self, path: str | os.PathLike[str], backend: str | None = None) -> None:
        self.path = os.fspath(path)
        with VideoFileReader(self.path) as reader:  # validates the file, one clear error if it is not a video
            self.rotation = reader.info.rotation
        if backend is None:
            try:
                import decord  # noqa: F401

                backend = "decord"
            except ImportError:
                backend = "pyav"
        if backend not in ("decord", "pyav"):
            raise ValueError(f"backend must be 'decord' or 'pyav', got {backend!r}")
        self.backend = backend
        if backend == "decord":
            import decord

            self._decord = decord.VideoReader(self.path, ctx=decord.cpu(0))
            self._length = len(self._decord)
        else:
            self._pts = frame_timestamps(self.path)[0]
            if not self._pts:
                raise InputError(f"{self.path}: no timestamped video frames to index")
            self._length = len(self._pts)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get_batch([index])[0]

    def get_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames at `indices` (any order, repeats allowed), as RGB uint8 (H, W, 3) arrays."""
        wanted = [self._check(i) for i in indices]
        if self.backend == "decord":
            batch = self._decord.get_batch(wanted).asnumpy()
            return [self._upright(np.ascontiguousarray(image)) for image in batch]
        return [self._decode_at(i) for i in wanted]

    def _check(self, index: int) -> int:
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"frame {index} is out of range for {self.path} ({self._length} frames)")
        return position

    def _upright(self, image: np.ndarray) -> np.ndarray:
        turns = round(self.rotation / 90) % 4
        return np.ascontiguousarray(np.rot90(image, turns)) if turns else image

    def _decode_at(self, index: int) -> np.ndarray:
        target = self._pts[index]
        with open_container(self.path) as container:
            stream = container.streams.video[0]
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    return frame_to_rgb(frame)
        raise InputError(f"{self.path}: frame {index} could not be decoded")
