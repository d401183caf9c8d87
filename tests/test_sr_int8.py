"""int8 on the CPU: calibration on frames with detail, agreement with float32 and the ncnn build, bad models."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from test_sr_upscale import _bikes, _ncnn, _psnr

from v2v import devices
from v2v.errors import UsageError
from v2v.restore.int8 import Int8Network, float_modules
from v2v.restore.sr_models import load_model
from v2v.restore.upscale import Upscaler, UpscaleStage


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("V2V_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    # Crops of different frames and places: the last two are not among the calibration frames.
    frames = _bikes(12)
    return [
        frames[0][40:168, 100:292],
        frames[3][100:228, 360:552],
        frames[8][0:128, 0:192],
        frames[11][144:272, 448:640],
    ]


def test_int8_agrees_with_the_ncnn_build_after_calibrating_on_other_frames(crops):
    model = load_model("realesr-animevideov3-x2")
    upscaler = Upscaler(model, dtype="int8", calibration_frames=2)
    calibration = upscaler.upscale_images(crops[:1]) + upscaler.upscale_images(crops[1:2])
    assert upscaler.int8 is not None and upscaler.int8.calibrated
    expected = _ncnn(0, crops, 2)
    # Calibration frames ran in float32, the others in int8.
    for ours, theirs in zip(calibration, expected[:2], strict=True):
        assert _psnr(ours, theirs) >= 60
    for image, theirs in zip(crops[2:], expected[2:], strict=True):
        ours = upscaler.upscale_images([image])[0]
        assert 40 <= _psnr(ours, theirs) < 60  # int8 is close, but it is not the float32 network


def test_rrdb_int8_keeps_the_upsampling_tail_float_and_agrees(crops):
    model = load_model("realesrgan-x4plus")
    assert float_modules(model.descriptor.model) == [f"model.{i}" for i in (10, 2, 3, 4, 5, 6, 7, 8, 9)]
    # 48x64 pieces, RRDBNet on the CPU is slow; the two calibration pieces have detail.
    small = [crops[0][40:88, 64:128], crops[1][40:88, 64:128], crops[3][:48, :64], crops[2][40:88, 64:128]]
    reference = Upscaler(model, dtype="fp32").upscale_images(small[2:])
    upscaler = Upscaler(model, dtype="int8", calibration_frames=2)
    upscaler.upscale_images(small[:1])
    upscaler.upscale_images(small[1:2])
    assert upscaler.int8 is not None and upscaler.int8.calibrated
    for image, expected in zip(small[2:], reference, strict=True):
        assert 40 <= _psnr(upscaler.upscale_images([image])[0], expected) < 60


def test_flat_frames_are_not_calibrated_on(crops):
    upscaler = Upscaler(load_model("realesr-animevideov3-x2"), dtype="int8", calibration_frames=1)
    reference = Upscaler(load_model("realesr-animevideov3-x2"), dtype="fp32")
    black = np.zeros_like(crops[0])
    assert np.array_equal(upscaler.upscale_images([black])[0], reference.upscale_images([black])[0])
    assert upscaler.int8 is not None and upscaler.int8.frames_observed == 0 and not upscaler.int8.calibrated
    upscaler.upscale_images(crops[:1])
    assert upscaler.int8.frames_observed == 1 and upscaler.int8.calibrated


class DataDependent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.mean() > 0.5 else x  # torch.fx cannot trace a branch on values


def test_untraceable_network_says_what_to_use():
    with pytest.raises(UsageError, match="trace.*DataDependent.*fp32 or bf16"):
        Int8Network(DataDependent())


def test_network_without_convolutions_is_refused():
    with pytest.raises(UsageError, match="no convolutions"):
        Int8Network(torch.nn.Sequential(torch.nn.Identity()))


def test_int8_is_for_the_cpu(monkeypatch):
    model = load_model("realesr-animevideov3-x2", "cpu")
    # No GPU here: pretend the device check found one, the int8 check comes before anything touches it.
    monkeypatch.setattr(devices, "resolve_device", lambda device: torch.device("cuda"))
    with pytest.raises(UsageError, match="int8 is for the CPU"):
        Upscaler(model, device="cuda", dtype="int8")


def test_upscale_command_with_int8(clip, tmp_path):
    output = tmp_path / "up.mp4"
    command = [sys.executable, "-m", "v2v", "upscale", str(clip), "-o", str(output), "--no-progress", "-v",
               "--model", "realesr-animevideov3-x2", "--dtype", "int8", "--calibration-frames", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "int8: calibrated on 1 frames" in result.stderr
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (128, 96)
        assert sum(1 for _ in container.decode(stream)) == 12


def test_survives_pickling_as_ray_sends_stages(crops):
    from ray import cloudpickle

    stage = UpscaleStage("realesr-animevideov3-x2", dtype="int8", calibration_frames=1)
    sent = cloudpickle.loads(cloudpickle.dumps(stage))  # before calibration, as a segment worker gets it
    assert np.array_equal(sent.upscaler.upscale_images(crops[:1])[0], stage.upscaler.upscale_images(crops[:1])[0])
    assert sent.upscaler.int8.calibrated and stage.upscaler.int8.calibrated
    # A calibrated network calibrates again where it lands (torch.ao's converted modules do not pickle).
    again = cloudpickle.loads(cloudpickle.dumps(stage))
    assert not again.upscaler.int8.calibrated
    again.upscaler.upscale_images(crops[:1])
    expected = stage.upscaler.upscale_images(crops[2:3])[0]
    assert np.array_equal(again.upscaler.upscale_images(crops[2:3])[0], expected)
