"""The runner: stages see every frame in order, errors surface, and a failed run leaves nothing behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.io.reader import open_source
from v2v.pipeline import MapStage, Stage, batched, run


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_map_stage_changes_pixels_not_timing(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "inverted.mkv"
    from v2v.io.writer import Encoding

    run(clip, [MapStage(lambda image: 255 - image)], out, encoding=Encoding(codec="ffv1"), progress=False)
    with open_source(clip) as a, open_source(out) as b:
        pairs = list(zip(a, b, strict=True))
    # Matroska shifts every stream so the AAC priming packet (pts < 0) starts at 0: compare from frame 0
    offset = pairs[0][1].time - pairs[0][0].time
    assert 0 <= offset < 0.05
    for before, after in pairs:
        assert after.time - before.time == pytest.approx(offset, abs=1e-3)
        np.testing.assert_array_equal(after.image, 255 - before.image)


def test_stages_chain_in_order_and_see_every_frame(clip: Path, tmp_path: Path) -> None:
    seen: list[int] = []

    class Record:
        def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
            for frame in frames:
                seen.append(frame.index)
                yield frame

    assert isinstance(Record(), Stage)
    run(clip, [MapStage(lambda im: im), Record()], tmp_path / "o.mp4", progress=False)
    assert seen == list(range(12))


def test_stage_error_is_raised_and_no_output_is_left(clip: Path, tmp_path: Path) -> None:
    def explode(image: np.ndarray) -> np.ndarray:
        explode.calls += 1  # type: ignore[attr-defined]
        if explode.calls == 5:  # type: ignore[attr-defined]
            raise ValueError("model failed on frame 5")
        return image

    explode.calls = 0  # type: ignore[attr-defined]
    out = tmp_path / "o.mp4"
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="frame 5"):
        run(clip, [MapStage(explode)], out, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []
    started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(timeout=1.0)
    assert [thread.name for thread in started if thread.is_alive()] == []  # the run's threads were all joined


def test_ctrl_c_part_way_leaves_no_output(clip: Path, tmp_path: Path) -> None:
    def interrupt(image: np.ndarray) -> np.ndarray:
        interrupt.calls += 1  # type: ignore[attr-defined]
        if interrupt.calls == 6:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        return image

    interrupt.calls = 0  # type: ignore[attr-defined]
    for out in (tmp_path / "o.mp4", tmp_path / "seq" / "%04d.png"):
        interrupt.calls = 0  # type: ignore[attr-defined]
        with pytest.raises(KeyboardInterrupt):
            run(clip, [MapStage(interrupt)], out, progress=False, keep_partial=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    # by default an image sequence keeps its finished frames, hidden, for --resume; nothing at the pattern's names
    interrupt.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        run(clip, [MapStage(interrupt)], tmp_path / "seq" / "%04d.png", progress=False)
    assert [p.name for p in (tmp_path / "seq").iterdir()] == [".%04d.png.v2v-partial"]


def test_a_stage_returning_bad_pixels_is_named() -> None:
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0)
    with pytest.raises(TypeError, match="RGB uint8"):
        frame.with_image(np.zeros((4, 4), np.float32))


def test_batched_keeps_order_and_flushes_the_tail() -> None:
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), i) for i in range(7)]
    batches = list(batched(iter(frames), 3))
    assert [[f.index for f in b] for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_tensor_round_trip_is_exact() -> None:
    images = [np.random.default_rng(i).integers(0, 256, (5, 7, 3), dtype=np.uint8) for i in range(3)]
    batch = images_to_tensor(images)
    assert tuple(batch.shape) == (3, 3, 5, 7) and float(batch.max()) <= 1.0
    for a, b in zip(images, tensor_to_images(batch), strict=True):
        np.testing.assert_array_equal(a, b)
