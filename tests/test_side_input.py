"""SideInput: a second clip aligned with the main one by time or frame number, through --start/--end and
segments, with stated policies for a side clip that is shorter or of another size."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_pattern, write_clip

from v2v.errors import InputError
from v2v.frames import Frame
from v2v.io.reader import TimeWindow, open_source
from v2v.io.side_input import SideInput
from v2v.pipeline import run
from v2v.segments import run_segmented

GOP = {"g": "10", "keyint_min": "10", "sc_threshold": "0"}


def frames(path: Path, **window: object) -> list[Frame]:
    with open_source(path, **window) as reader:  # type: ignore[arg-type]
        return list(reader)


def test_time_alignment_follows_start_and_end(tmp_path: Path) -> None:
    main = write_clip(tmp_path / "main.mp4", frames=30, fps=25)
    side = write_clip(tmp_path / "side.mp4", frames=30, fps=25)
    with SideInput(side) as aligned:
        for frame in frames(main, start=0.4, end=0.9):
            assert np.array_equal(aligned.frame_for(frame), frames(side)[round(frame.time * 25)].image)


def test_time_alignment_pairs_clips_of_different_rates(tmp_path: Path) -> None:
    main = write_clip(tmp_path / "main.mp4", frames=20, fps=20)
    side = write_clip(tmp_path / "side.mp4", frames=10, fps=10)  # each side frame lasts two main frames
    side_frames = frames(side)
    with SideInput(side) as aligned:
        for frame in frames(main):
            assert np.array_equal(aligned.frame_for(frame), side_frames[frame.index // 2].image)


def test_asking_for_an_earlier_frame_reopens_the_clip(tmp_path: Path) -> None:
    main = write_clip(tmp_path / "main.mp4", frames=20, fps=25)
    picked = frames(main)
    with SideInput(main) as aligned:
        for index in (12, 3, 15, 0):
            assert np.array_equal(aligned.frame_for(picked[index]), picked[index].image)


def test_a_shorter_side_clip_is_refused_or_held(tmp_path: Path, caplog) -> None:
    main = write_clip(tmp_path / "main.mp4", frames=12, fps=10)
    short = write_clip(tmp_path / "short.mp4", frames=6, fps=10)
    with SideInput(short, what="mask video") as strict, pytest.raises(InputError, match="mask video .* ends before"):
        for frame in frames(main):
            strict.frame_for(frame)
    with SideInput(short, shorter="hold") as holding, caplog.at_level(logging.WARNING):
        got = [holding.frame_for(frame) for frame in frames(main)]
    assert all(np.array_equal(image, frames(short)[-1].image) for image in got[6:])
    assert "last frame is held" in caplog.text


def test_another_size_is_refused_or_resized(tmp_path: Path) -> None:
    main = write_clip(tmp_path / "main.mp4", frames=4, width=64, height=48)
    big = write_clip(tmp_path / "big.mp4", frames=4, width=128, height=96)
    first = frames(main)[0]
    with SideInput(big) as strict, pytest.raises(InputError, match="size differs"):
        strict.frame_for(first)
    with SideInput(big, size="resize") as resizing:
        assert resizing.frame_for(first).shape == (48, 64, 3)


def test_index_alignment_walks_the_same_window(tmp_path: Path) -> None:
    main = write_clip(tmp_path / "main.mp4", frames=40, fps=25)
    window = frames(main, start=0.2)
    side = SideInput(main, align="index", window=TimeWindow(start=0.2))
    # a segment's first frame is frame 15 of the window; index alignment starts there
    assert np.array_equal(side.frame_for(dataclasses.replace(window[15], index=0)), window[15].image)
    assert np.array_equal(side.frame_for(window[16]), window[16].image)
    side.close()


class PasteSide:
    """A stage that puts the side frame's left half beside the main frame's right half."""

    def __init__(self, path: Path) -> None:
        self.side = SideInput(path)

    def process(self, frames):
        for frame in frames:
            image = frame.image.copy()
            image[:, : frame.width // 2] = self.side.frame_for(frame)[:, : frame.width // 2]
            yield frame.with_image(image)


def test_segments_and_a_trimmed_run_get_the_side_frames_of_a_single_pass(tmp_path: Path) -> None:
    from v2v.io.writer import Encoding

    main = write_clip(tmp_path / "main.mp4", frames=40, fps=25, options=GOP)
    side = tmp_path / "side.mp4"
    write_clip(side, frames=40, fps=25)
    lossless = Encoding(codec="ffv1")
    single, segmented = tmp_path / "single.mkv", tmp_path / "segmented.mkv"
    run(main, [PasteSide(side)], single, encoding=lossless, start=0.2, end=1.4, progress=False)
    run_segmented(main, lambda: [PasteSide(side)], segmented, encoding=lossless, start=0.2, end=1.4,
                  segment_seconds=0.4, progress=False)
    a, b = frames(single), frames(segmented)
    assert len(a) == len(b) == 30
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    expected = moving_pattern(5, 64, 48)  # the side's frame at 0.2 s is its frame 5
    assert np.abs(a[0].image[:, :32].astype(int) - expected[:, :32]).mean() < 4  # x264 noise only
