"""Pictures: `v2v preview` contact sheets, `v2v compare` videos and plots, `v2v metrics --plot`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import write_clip

from v2v.commands.preview import spread
from v2v.metrics import psnr
from v2v.pictures import contact_sheet, resize, to_height

LABEL_BAND = 20  # compare's labels on frames 48-64 high stay above this row
# the last line of every command that writes frames
WROTE = re.compile(r"v2v: wrote \S+: \d+ frames in \d+\.\d s \(\d+\.\d (frames/s|s/frame)\)")


def v2v(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "v2v", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def picture_rows(sheet: np.ndarray) -> int:
    """Rows of pictures on a sheet: runs of 40+ non-background pixels down a column through the left pictures."""
    column = (np.abs(sheet[:, 20].astype(int) - 24).sum(axis=1) > 30).tolist()
    runs, length = 0, 0
    for filled in [*column, False]:
        if filled:
            length += 1
        else:
            runs, length = runs + (length >= 40), 0
    return runs


def test_spread_takes_the_ends_and_all_of_a_short_clip() -> None:
    assert spread(30, 4) == [0, 10, 19, 29]
    assert spread(3, 6) == [0, 1, 2]
    assert spread(100, 1) == [50]


def test_contact_sheet_puts_source_left_and_result_right() -> None:
    source = np.zeros((40, 60, 3), np.uint8)
    result = np.full((80, 120, 3), 200, np.uint8)
    sheet = contact_sheet([("frame 0", source, result)], ["v2v upscale clip.mp4", "settings: none"], height=100)
    # pictures at the larger frame's height (80): source scaled from 40 to 80 high, beside the result
    assert sheet.dtype == np.uint8 and sheet.shape[1] >= 8 * 3 + 120 + 120
    row = sheet[8 + 14 + 40]  # the middle line of the pictures
    assert (row[8 : 8 + 120] == 0).all() and (row[16 + 120 : 16 + 240] == 200).all()
    assert to_height(source, 80).shape == (80, 120, 3)


def test_preview_transcode_sheet_shows_the_picked_frames(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=30, width=96, height=64)
    sheet = tmp_path / "sheet.png"
    result = v2v("preview", str(clip), "--frames", "4", "-o", str(sheet), "transcode")
    assert result.returncode == 0, result.stderr
    image = read_png(sheet)
    frames = decode(clip)
    tops = [8 + 14 + k * (14 + 64 + 8) for k in range(4)]  # row layout: label line, then the 64-high pictures
    for top, index in zip(tops, [0, 10, 19, 29], strict=True):
        left = image[top : top + 64, 8 : 8 + 96]
        right = image[top : top + 64, 16 + 96 : 16 + 192]
        assert psnr(left, frames[index]) > 40, index  # the source picture is the picked frame
        assert psnr(right, left) > 40  # transcode changes nothing visible
        others = [psnr(left, frames[i]) for i in range(30) if abs(i - index) > 2]
        assert max(others) < psnr(left, frames[index])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "sheet.png"]


def test_preview_of_a_short_clip_takes_what_there_is_and_stabilize_gets_its_guide(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "short.mp4", frames=3)
    sheet = tmp_path / "s.png"
    result = v2v("preview", str(clip), "--frames", "6", "-o", str(sheet), "--context", "2", "stabilize",
                 "--guide", str(clip))
    assert result.returncode == 0, result.stderr
    assert "has 3 frame(s)" in result.stderr
    assert picture_rows(read_png(sheet)) == 3  # three rows, not six
    again = v2v("preview", str(clip), "--frames", "2", "-o", str(sheet), "transcode")
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_preview_of_interpolation_shows_a_made_frame_not_the_source_passed_through(tmp_path: Path) -> None:
    from v2v.commands.preview import frame_times, run_around
    from v2v.io.source_frames import SourceFrames
    from v2v.restore.interpolate import InterpolateStage

    def blend(a: np.ndarray, b: np.ndarray, positions: list[float]) -> list[np.ndarray]:
        return [np.round(a * (1 - t) + b * t).astype(np.uint8) for t in positions]

    clip = write_clip(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    frames = decode(clip)
    with SourceFrames(clip) as source:
        times = frame_times(source)
    source, result, made = run_around(str(clip), [InterpolateStage(factor=2, between=blend)], times, 5, 1, 1, None)
    assert made
    assert psnr(source, frames[5]) > 40
    assert np.array_equal(result, blend(frames[5], frames[6], [0.5])[0])  # what interpolation adds after frame 5
    _, last, made = run_around(str(clip), [InterpolateStage(factor=2, between=blend)], times, 11, 1, 1, None)
    assert not made
    assert psnr(last, frames[11]) > 40  # nothing is made after the last frame: the nearest output


def test_compare_side_by_side_aligns_lengths_and_sizes_and_keeps_a_audio(tmp_path: Path) -> None:
    a = write_clip(tmp_path / "a.mp4", frames=20, width=96, height=64, audio=True)
    b = write_clip(tmp_path / "b.mp4", frames=15, width=64, height=48)
    out, plot = tmp_path / "sbs.mp4", tmp_path / "plot.png"
    result = v2v("compare", str(a), str(b), "-o", str(out), "--plot", str(plot), "--preset", "ultrafast")
    assert result.returncode == 0, result.stderr
    assert "comparing the first 15" in result.stderr and "scaled to 86x64" in result.stderr
    frames, originals = decode(out), decode(a)
    assert len(frames) == 15 and frames[0].shape == (64, 96 + 86, 3)
    band = LABEL_BAND  # below the labels
    assert all(psnr(f[band:, :96], o[band:]) > 30 for f, o in zip(frames, originals, strict=False))
    assert audio_packets(out) == audio_packets(a)[: len(audio_packets(out))] and audio_packets(out)
    png = read_png(plot)
    assert png.shape[0] > 200 and png.std() > 10


def test_compare_wipe_is_a_size(tmp_path: Path) -> None:
    a = write_clip(tmp_path / "a.mp4", frames=10)
    b = write_clip(tmp_path / "b.mp4", frames=10, width=32, height=24)
    out = tmp_path / "w.mp4"
    result = v2v("compare", str(a), str(b), "-o", str(out), "--wipe", "--preset", "ultrafast")
    assert result.returncode == 0, result.stderr
    frames, first, second = decode(out), decode(a), [resize(image, 64, 48) for image in decode(b)]
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    # the line sweeps from left to right: A at the start, B at the end, half of each half-way
    band = LABEL_BAND  # below the labels
    assert psnr(frames[0][band:, 4:], first[0][band:, 4:]) > 30
    assert psnr(frames[9][band:, :-4], second[9][band:, :-4]) > 30
    assert psnr(frames[5][band:, :30], second[5][band:, :30]) > 30
    assert psnr(frames[5][band:, 40:], first[5][band:, 40:]) > 30


def test_metrics_plot(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", frames=8)
    plot = tmp_path / "m.png"
    result = v2v("metrics", str(clip), "--guide", str(clip), "--ref", str(clip), "--flow", "dis", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert read_png(plot).shape[0] > 200


@pytest.mark.parametrize("command", ["compare", "metrics"])
def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path, command: str) -> None:
    clip = write_clip(tmp_path / "c.mp4", frames=4)
    args = {"compare": ["compare", str(clip), str(clip), "-o", str(tmp_path / "o.mp4")],
            "metrics": ["metrics", str(clip), "--guide", str(clip), "--flow", "dis"]}[command]
    code = ("import sys; sys.modules['matplotlib'] = None; from v2v.cli import main; "
            f"sys.exit(main({[*args, '--plot', str(tmp_path / 'p.png')]!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "pip install 'v2v[plot]'" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


def test_preview_and_compare_on_the_sample_clip(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    sample = tmp_path / "sample.mp4"
    subprocess.run([sys.executable, str(root / "samples" / "make_sample.py"), str(sample)], check=True)
    result = v2v("preview", str(sample), "--frames", "5", "transcode", "--crf", "30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert picture_rows(read_png(tmp_path / "sample.transcode.preview.png")) == 5
    result = v2v("compare", str(sample), str(sample), "-o", str(tmp_path / "same.mp4"), "--plot",
                 str(tmp_path / "same.png"), "--preset", "ultrafast")
    assert result.returncode == 0, result.stderr
    assert len(decode(tmp_path / "same.mp4")) == len(decode(sample))
    assert audio_packets(tmp_path / "same.mp4") == audio_packets(sample)
    assert (tmp_path / "same.png").stat().st_size > 10_000


@pytest.mark.slow
def test_preview_of_an_upscale_adds_one_to_one_crops_of_the_result(tmp_path: Path) -> None:
    from v2v.cli import main
    from v2v.pictures import nearest

    clip = write_clip(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    sheet, frames = tmp_path / "up.png", tmp_path / "up" / "%05d.png"
    model = ["upscale", "--model", "realesr-animevideov3-x2", "--dtype", "fp32"]
    # in this process, both: one torch import, the same threads for the same numbers
    assert main(["preview", str(clip), "--frames", "1", "-o", str(sheet), *model]) == 0
    assert main([*model, str(clip), "-o", str(frames), "--start-number", "0", "--no-progress"]) == 0
    upscaled = read_png(tmp_path / "up" / "00002.png")  # the picked frame: the middle one
    source = decode(clip)[2]
    image = read_png(sheet)
    # the row: source and result scaled to 96 high (128 wide), then the 96x96 crops at their own pixels
    size, left = 96, 8 * 3 + 128 * 2
    panel = image[:, left + size + 8 : left + 2 * size + 8]
    found = [(x, y) for y in range(image.shape[0] - size) for x in range(128 - size + 1)
             if np.array_equal(panel[y : y + size], upscaled[:, x : x + size])]
    assert len(found) == 1, found  # the result's own pixels, exactly, once
    x, y = found[0]
    blown_up = nearest(source, 128, 96)
    assert np.array_equal(blown_up[::2, ::2], source)  # x2 by nearest neighbour: every pixel a 2x2 block
    assert np.array_equal(image[y : y + size, left : left + size], blown_up[:, x : x + size])


def test_preview_takes_mask_and_inpaint(tmp_path: Path) -> None:
    import cv2

    from v2v.inpaint.masks import binarize

    clip = write_clip(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    masks = write_clip(tmp_path / "masks.mp4", frames=12, width=96, height=64)  # its light pixels are the masks
    drawn = np.zeros((64, 96), np.uint8)
    drawn[20:40, 30:60] = 255
    cv2.imwrite(str(tmp_path / "m.png"), drawn)
    tops = [8 + 14 + k * (14 + 64 + 8) for k in range(3)]  # frames 0, 6 and 11
    sheet = tmp_path / "mask.png"
    result = v2v("preview", str(clip), "--frames", "3", "-o", str(sheet), "mask", "--mask", str(masks))
    assert result.returncode == 0, result.stderr
    image = read_png(sheet)
    assert picture_rows(image) == 3
    truths = [binarize(decode(masks)[i]) for i in (0, 6, 11)]
    for top, truth in zip(tops, truths, strict=True):
        shown = binarize(image[top : top + 64, 16 + 96 : 16 + 192])
        assert (shown == truth).mean() > 0.99  # each picked frame's own mask
    sheet = tmp_path / "inpaint.png"
    result = v2v("preview", str(clip), "--frames", "3", "-o", str(sheet), "inpaint", "--mask", str(tmp_path / "m.png"),
                 "--fill-radius", "2")
    assert result.returncode == 0, result.stderr
    image = read_png(sheet)
    assert picture_rows(image) == 3
    source, filled = image[tops[0] : tops[0] + 64, 8 : 8 + 96], image[tops[0] : tops[0] + 64, 16 + 96 : 16 + 192]
    assert psnr(filled[:, :20], source[:, :20]) > 40 and psnr(filled[20:40, 30:60], source[20:40, 30:60]) < 30


def test_compare_labels_each_clip_and_ends_with_the_line_every_command_ends_with(tmp_path: Path) -> None:
    a = write_clip(tmp_path / "a.mp4", frames=6, width=96, height=64)
    b = write_clip(tmp_path / "b.mp4", frames=6, width=96, height=64)
    fast = ["--preset", "ultrafast", "--crf", "10"]
    runs = {name: v2v("compare", str(a), str(b), "-o", str(tmp_path / f"{name}.mp4"), *options, *fast)
            for name, options in {"plain": ["--no-labels"], "named": ["--labels", "before,after"],
                                  "wipe": ["--wipe"], "plain_wipe": ["--wipe", "--no-labels"]}.items()}
    runs["transcode"] = v2v("transcode", str(a), "-o", str(tmp_path / "t.mp4"), *fast)
    for name, result in runs.items():
        assert result.returncode == 0, result.stderr
        assert WROTE.fullmatch(result.stderr.splitlines()[-1]), (name, result.stderr)
    plain, named = decode(tmp_path / "plain.mp4")[0], decode(tmp_path / "named.mp4")[0]
    wipe, plain_wipe = decode(tmp_path / "wipe.mp4")[0], decode(tmp_path / "plain_wipe.mp4")[0]

    def differs(labelled: np.ndarray, bare: np.ndarray, x: int) -> float:
        return float(np.abs(labelled[:LABEL_BAND, x : x + 24].astype(int) - bare[:LABEL_BAND, x : x + 24]).mean())

    assert differs(named, plain, 0) > 20 and differs(named, plain, 96) > 20  # a label over A and over B
    assert differs(named, plain, 48) < 3  # ...in the top left corner of each half
    assert psnr(named[LABEL_BAND:], plain[LABEL_BAND:]) > 35
    assert differs(wipe, plain_wipe, 0) > 20 and differs(wipe, plain_wipe, 72) > 20  # B's top left, A's top right
    assert psnr(wipe[LABEL_BAND:], plain_wipe[LABEL_BAND:]) > 35


def test_plot_colours_mean_one_thing_each() -> None:
    from matplotlib.colors import to_hex

    from v2v.pictures import score_figure

    figure = score_figure("A = a.mp4, B = b.mp4", {"A": [1.0, 2.0, 1.5], "B": [0.5, 1.0, 0.8]},
                          {"psnr": [30.0, 31.0, 32.0, 31.0], "ssim": [0.9, 0.91, 0.92, 0.9]}, fps=10)
    top, bottom, twin = figure.axes
    clips = {line.get_label(): to_hex(line.get_color()) for line in top.get_lines()}
    scores = {line.get_label(): to_hex(line.get_color()) for line in [*bottom.get_lines(), *twin.get_lines()]}
    assert set(clips) == {"A", "B"} and set(scores) == {"PSNR", "SSIM"}
    colours = [*clips.values(), *scores.values()]
    assert len(set(colours)) == 4, colours  # no colour stands for two things
    assert to_hex(bottom.yaxis.label.get_color()) == scores["PSNR"]
    assert to_hex(twin.yaxis.label.get_color()) == scores["SSIM"]
    assert bottom.get_legend() is not None
