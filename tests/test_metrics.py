"""Metrics: PSNR/SSIM, warping error per Lai et al. 2018, and `v2v metrics`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tqdm

from v2v.cli import main as cli
from v2v.metrics import pair_warping_error, psnr, score_video, ssim


def texture(seed: int = 0, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 216, (height, width, 3), dtype=np.uint8)


def test_psnr_and_ssim_known_values() -> None:
    a = texture()
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2), abs=1e-6)  # MSE 1
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 255 - a) < 0.0


def test_warping_error_is_zero_for_a_video_that_moves_with_its_flow() -> None:
    a = texture()
    a[:, -4:] = a[:, -4:-3]  # flat right edge: what leaves the frame is the border the warp repeats
    b = np.roll(a, 3, axis=1)  # content moves right 3 px: flow a -> b = (3, 0)
    forward = np.zeros((48, 64, 2), np.float32)
    forward[..., 0] = 3
    error, masked = pair_warping_error(a, b, forward, -forward)
    assert error < 1e-10
    assert masked == 0.0  # a uniform motion passes the forward-backward test everywhere


def test_flow_of_an_original_at_half_the_size_is_scaled() -> None:
    """An upscale's original gives its flow (and occlusion mask) at its own size: scaled, they score the upscale
    as the full-size flow does."""
    a = texture()
    a[:, -8:] = a[:, -8:-7]
    b = np.roll(a, 6, axis=1)  # 6 px right at full size: 3 px in the half-size original
    half = np.zeros((24, 32, 2), np.float32)
    half[..., 0] = 3
    occluded = half.copy()
    occluded[:12, :8, 0] = -3  # backward flow reversed there
    error, masked = pair_warping_error(a, b, half, -occluded)
    assert error < 1e-10
    assert masked == pytest.approx(12 * 5 / (24 * 32))  # the pixels landing on it: rows 0-11, columns 0-4


def test_warping_error_of_a_brightness_flicker_is_its_squared_step() -> None:
    a = np.full((48, 64, 3), 100, np.uint8)
    b = np.full((48, 64, 3), 125, np.uint8)
    zero = np.zeros((48, 64, 2), np.float32)
    error, masked = pair_warping_error(a, b, zero, zero)
    assert error == pytest.approx((25 / 255) ** 2, rel=1e-4)
    assert masked == 0.0


def test_occluded_pixels_are_left_out_and_counted() -> None:
    forward = np.zeros((48, 64, 2), np.float32)
    backward = np.zeros((48, 64, 2), np.float32)
    forward[10:20, 10:20, 0] = 6  # a square moving right by 6 px
    backward[10:20, 16:26, 0] = -6
    a = texture(1)
    b = a.copy()
    b[10:20, 16:26] = a[10:20, 10:20]
    b[10:20, 10:16] = 255  # the disoccluded strip is something new in b
    error, masked = pair_warping_error(a, b, forward, backward)
    assert error < 1e-3
    assert 0.0 < masked < 0.15


def test_score_video_skips_scene_cuts_and_averages_the_rest() -> None:
    frames = [np.full((48, 64, 3), v, np.uint8) for v in (100, 110, 120)]
    zero = np.zeros((48, 64, 2), np.float32)
    far = np.full((48, 64, 2), 40, np.float32)  # a "cut": every pixel fails the forward-backward test
    scores = score_video(frames, frames, flows=[(zero, zero), (far, far)], reference=frames)
    assert scores.skipped_pairs == 1
    assert scores.warping_error == pytest.approx((10 / 255) ** 2, rel=1e-4)
    assert scores.psnr == 100.0 and scores.ssim == pytest.approx(1.0)


def test_metrics_command_json(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["metrics", str(clip), "--guide", str(clip), "--ref", str(clip), "--flow", "dis", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 12
    assert result["warping_error"] is not None and result["warping_error"] < 0.01
    assert result["psnr"] == 100.0


def test_metrics_default_flow_scores_the_sample_with_a_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = tmp_path / "sample.mp4"
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "samples" / "make_sample.py"), str(sample)],
                   check=True, capture_output=True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as in a terminal: the bar shows

    class EveryFrame(tqdm.tqdm):  # redraws on every update, so the last count shows whatever the machine's speed
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs, mininterval=0, miniters=1)

    monkeypatch.setattr(tqdm, "tqdm", EveryFrame)
    assert cli(["metrics", str(sample), "--guide", str(sample), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["flow"] == "dis" and result["frames"] == 72 and 0 < result["warping_error"] < 1e-3
    assert "72/72" in captured.err
    assert cli(["metrics", str(sample), "--guide", str(sample), "--max-frames", "8", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "frames           8" in captured.out and captured.err == ""
