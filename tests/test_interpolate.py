"""Interpolation: exact new instants (factor, fps, VFR, slow motion), cuts, audio, segments, bad input.

The stage is tested with a plain blend as its interpolator, so these tests are about timing and plumbing;
tests/test_rife.py tests the model, and the CLI tests at the end run the real RIFE weights.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import kill_after_a_segment, write_clip

from v2v.errors import InputError, UsageError
from v2v.frames import Frame
from v2v.io.reader import open_source
from v2v.io.writer import Encoding
from v2v.pipeline import run
from v2v.restore.interpolate import InterpolateStage
from v2v.segments import default_work_dir, run_segmented

LOSSLESS = Encoding(codec="libx264rgb", crf=0, preset="ultrafast")  # lossless, in MP4, which keeps time bases exactly
GOP = {"g": "10", "keyint_min": "10", "sc_threshold": "0"}


def blend(a: np.ndarray, b: np.ndarray, positions: list[float]) -> list[np.ndarray]:
    return [np.round(a * (1 - t) + b * t).astype(np.uint8) for t in positions]


def instants(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(p.pts * stream.time_base for p in container.demux(stream) if p.size)


def frames_of(path: Path) -> list[Frame]:
    with open_source(path) as reader:
        return list(reader)


def audio_bytes(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def test_factor_two_on_25_fps_gives_an_exact_50_fps_timeline(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=12, fps=25, audio=True)
    out = tmp_path / "out.mp4"
    run(source, [InterpolateStage(factor=2, between=blend)], out, encoding=LOSSLESS, progress=False)
    got, original = instants(out), instants(source)
    assert len(got) == 2 * 12 - 1
    assert got == [original[0] + Fraction(k, 50) for k in range(23)]  # strictly increasing, exact
    assert set(original) <= set(got)  # source frames keep their instants
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 50
    # source frames pass through untouched; the made one between is the blend of its neighbours
    made, read = frames_of(out), frames_of(source)
    assert np.array_equal(made[2].image, read[1].image)
    assert np.array_equal(made[1].image, blend(read[0].image, read[1].image, [0.5])[0])
    assert audio_bytes(out) == audio_bytes(source)


def test_fps_24_to_60_gives_the_right_count_and_instants(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=10, fps=24, time_base=Fraction(1, 12288))
    out = tmp_path / "out.mp4"
    run(source, [InterpolateStage(fps=60, between=blend)], out, encoding=LOSSLESS, progress=False)
    got = instants(out)
    # 10 frames span 9/24 s; the 60 fps grid from the first frame to the last has floor(9 * 60 / 24) + 1 points
    assert len(got) == 9 * 60 // 24 + 1 == 23
    assert got == [Fraction(k, 60) for k in range(23)]


def test_the_progress_bar_knows_how_many_frames_come_out(tmp_path: Path) -> None:
    """The run's frame estimate (the progress bar's total) equals what the stage writes, for each mode."""
    from v2v.pipeline import frames_out

    source = write_clip(tmp_path / "in.mp4", frames=10, fps=24, time_base=Fraction(1, 12288))
    for mode in ({"factor": 3}, {"fps": 60}, {"slowmo": 2}):
        stage = InterpolateStage(**mode, between=blend)
        report = run(source, [stage], tmp_path / "out.mp4", encoding=LOSSLESS, overwrite=True, progress=False)
        assert frames_out([stage], 10, Fraction(24)) == report.frames_written, mode
    assert frames_out([InterpolateStage(fps=60, between=blend)], 10, None) is None  # rate unknown: no total


def test_ntsc_23_976_to_59_94_is_exact(tmp_path: Path) -> None:
    from v2v.commands.interpolate import frame_rate

    assert frame_rate("59.94") == Fraction(60000, 1001) and frame_rate("60000/1001") == Fraction(60000, 1001)
    assert frame_rate("60") == 60
    rate = Fraction(24000, 1001)
    stage = InterpolateStage(fps=frame_rate("59.94"), between=blend)
    pts = list(range(0, 1001 * 8, 1001))  # 8 frames at 24000/1001 in a 1/24000 time base
    frames = [Frame(np.full((8, 8, 3), 10 * i, np.uint8), i, p, Fraction(1, 24000)) for i, p in enumerate(pts)]
    out = list(stage.process(iter(frames)))
    times = [f.pts * f.time_base for f in out]
    assert times == [k / Fraction(60000, 1001) for k in range(len(times))]
    assert len(out) == 7 * 60000 // 24000 + 1  # 7 gaps of 1001/24000 s, 2.5 frames each
    assert stage.output_timing(__import__("v2v.pipeline").pipeline.Timing(rate, Fraction(1, 24000))).rate == Fraction(
        60000, 1001)


def test_variable_frame_rate_splits_each_gap_evenly(tmp_path: Path) -> None:
    pts = [0, 100, 150, 350, 400, 700]
    source = write_clip(tmp_path / "vfr.mkv", frames=len(pts), pts=pts, time_base=Fraction(1, 1000))
    out = tmp_path / "out.mp4"
    run(source, [InterpolateStage(factor=2, between=blend)], out, encoding=LOSSLESS, progress=False)
    midpoints = {Fraction(a + b, 2000) for a, b in zip(pts, pts[1:], strict=False)}
    expected = sorted({Fraction(p, 1000) for p in pts} | midpoints)
    assert instants(out) == expected


def test_a_scene_cut_is_not_blended(tmp_path: Path, caplog) -> None:
    y, x = np.mgrid[0:48, 0:64]
    bright = np.stack([x * 4, y * 5, np.full_like(x, 200)], -1).astype(np.uint8)
    frames = [Frame(bright if i < 4 else 255 - bright // 4, i, i, Fraction(1, 10)) for i in range(8)]
    stage = InterpolateStage(factor=3, between=blend)
    with caplog.at_level("INFO"):
        out = list(stage.process(iter(frames)))
    assert len(out) == 3 * 7 + 1
    across = out[3 * 3 + 1 : 3 * 4]  # the two frames made between source frames 3 and 4
    assert np.array_equal(across[0].image, frames[3].image) and np.array_equal(across[1].image, frames[4].image)
    assert stage.cuts == [4] and "scene cut" in caplog.text


def test_slow_motion_stretches_time_and_drops_audio(tmp_path: Path, caplog) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=6, fps=10, audio=True)
    out = tmp_path / "slow.mp4"
    run(source, [InterpolateStage(slowmo=4, between=blend)], out, progress=False)
    got = instants(out)
    assert got == [Fraction(k, 10) for k in range(4 * 5 + 1)]  # 10 fps kept, 4x the duration
    with av.open(str(out)) as container:
        assert not container.streams.audio
    assert "audio and subtitles are dropped" in caplog.text


def test_segmented_run_equals_single_pass(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "gop.mp4", frames=40, width=64, height=48, fps=25, audio=True, options=GOP)
    single, segmented = tmp_path / "single.mp4", tmp_path / "segmented.mp4"
    for mode in ({"factor": 3}, {"fps": Fraction(60)}):
        run(source, [InterpolateStage(**mode, between=blend)], single, encoding=LOSSLESS, overwrite=True,
            progress=False)
        stage = InterpolateStage(**mode, between=blend)
        run_segmented(source, lambda stage=stage: [stage], segmented, declared=[stage], encoding=LOSSLESS,
                      segment_seconds=0.4, overwrite=True, progress=False)
        a, b = frames_of(single), frames_of(segmented)
        assert [f.time for f in a] == [f.time for f in b] and len(a) > 40
        assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
        assert audio_bytes(segmented) == audio_bytes(source)


def test_ray_workers_interpolate_as_a_local_run_does(local_ray, tmp_path: Path) -> None:
    source = write_clip(tmp_path / "gop.mp4", frames=30, width=64, height=48, fps=25, audio=True, options=GOP)
    here, there = tmp_path / "local.mp4", tmp_path / "ray.mp4"
    stage = InterpolateStage(fps=Fraction(60), between=blend)
    for out, backend in ((here, "local"), (there, "ray")):
        run_segmented(source, lambda: [InterpolateStage(fps=Fraction(60), between=blend)], out, declared=[stage],
                      encoding=LOSSLESS, segment_seconds=0.4, backend=backend, workers=2, progress=False)
    a, b = frames_of(here), frames_of(there)
    assert [f.time for f in a] == [f.time for f in b] and len(a) == 29 * 60 // 25 + 1
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert audio_bytes(there) == audio_bytes(source)


def test_bad_settings_are_usage_errors() -> None:
    for settings in ({"factor": 1}, {"factor": -2}, {"slowmo": 1}, {"factor": 2, "fps": 60}, {}, {"factor": 17},
                     {"slowmo": 1000}):
        with pytest.raises(UsageError):
            InterpolateStage(**settings, between=blend)
    stage = InterpolateStage(fps=20, between=blend)
    from v2v.pipeline import Timing

    with pytest.raises(UsageError, match="does not drop frames"):
        stage.output_timing(Timing(Fraction(25), Fraction(1, 25)))
    with pytest.raises(UsageError, match="more than 16 times the source's 10 frames/s; choose at most 160"):
        InterpolateStage(fps=161, between=blend).output_timing(Timing(Fraction(10), Fraction(1, 10)))
    assert InterpolateStage(factor=16, between=blend).factor == 16


def test_one_frame_is_refused(tmp_path: Path) -> None:
    frames = [Frame(np.zeros((8, 8, 3), np.uint8), 0, 0, Fraction(1, 25))]
    with pytest.raises(InputError, match="at least two"):
        list(InterpolateStage(factor=2, between=blend).process(iter(frames)))


# -- the command, with the real RIFE weights ---------------------------------------------------------------


def v2v(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "v2v", *args], capture_output=True, text=True, timeout=600)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and words in lines[0] and "internal error" not in lines[0], result.stderr


def test_cli_factor_two_keeps_audio_bytes(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=8, fps=25, audio=True)
    out = tmp_path / "out.mp4"
    result = v2v("interpolate", str(source), "-o", str(out), "--factor", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert len(instants(out)) == 15 and audio_bytes(out) == audio_bytes(source)


def test_cli_bad_input_gets_one_line_and_writes_nothing(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", frames=6, fps=25)
    single = write_clip(tmp_path / "one.mp4", frames=1, fps=25)
    out = tmp_path / "out.mp4"
    one_line_error(v2v("interpolate", str(source), "-o", str(out), "--factor", "1"), 2, "--factor")
    one_line_error(v2v("interpolate", str(source), "-o", str(out), "--factor", "-3"), 2, "--factor")
    one_line_error(v2v("interpolate", str(source), "-o", str(out), "--fps", "20"), 2, "does not drop frames")
    one_line_error(v2v("interpolate", str(source), "-o", str(out), "--slowmo", "2", "--fps", "60"), 2,
                   "not allowed with")
    one_line_error(v2v("interpolate", str(single), "-o", str(out)), 1, "at least two")
    one_line_error(v2v("interpolate", str(source), "-o", str(out), "--model", "rife-9"), 2, "did you mean")
    one_line_error(v2v("interpolate", str(source), "-o", str(out), "--flow-scale", "3"), 2,
                   "--flow-scale must be auto or one of")
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    run(source, [], str(frames_dir / "%04d.png"), progress=False)
    one_line_error(v2v("interpolate", str(frames_dir / "%04d.png"), "-o", str(frames_dir / "%04d.png"),
                       "--overwrite"), 2, "overwrite the source")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    assert len(list(frames_dir.iterdir())) == 6


def test_cli_model_options_reach_the_interpolator() -> None:
    from v2v.cli import build_parser
    from v2v.commands.interpolate import build_stages

    for options, scale, tta in (([], "auto", False), (["--flow-scale", "0.5", "--tta"], 0.5, True)):
        args = build_parser().parse_args(["interpolate", "in.mp4", "-o", "out.mp4", "--device", "cpu", *options])
        (stage,) = build_stages(args)
        interpolator = stage.between.__self__
        assert (interpolator.flow_scale, interpolator.tta) == (scale, tta)


def test_resume_after_a_kill_equals_a_single_pass(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "gop.mp4", frames=30, width=64, height=48, fps=25, audio=True, options=GOP)
    out, single = tmp_path / "resumed.mkv", tmp_path / "single.mkv"
    common = ["--factor", "2", "--codec", "ffv1", "--segment-seconds", "0.4", "--no-progress"]
    manifest = Path(default_work_dir(str(out))) / "manifest.json"
    process = subprocess.Popen([sys.executable, "-m", "v2v", "interpolate", str(source), "-o", str(out), "--resume",
                                *common], stderr=subprocess.DEVNULL)
    kill_after_a_segment(process, manifest)
    assert not out.exists()
    resumed = v2v("interpolate", str(source), "-o", str(out), "--resume", *common)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    assert v2v("interpolate", str(source), "-o", str(single), *common).returncode == 0
    a, b = frames_of(single), frames_of(out)
    assert [f.time for f in a] == [f.time for f in b] and len(a) == 59
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert audio_bytes(out) == audio_bytes(source)
    assert not Path(default_work_dir(str(out))).exists()
