"""Image-sequence outputs are resumable: finished frames are whole files kept in a hidden folder beside the output,
and `--resume` (or `run(resume=True)`) writes only the rest, after feeding the stages their declared context."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_clip
from v2v.errors import OutputError, UsageError
from v2v.frames import Frame
from v2v.io.reader import open_source
from v2v.pipeline import Context, MapStage, run


def invert(image: np.ndarray) -> np.ndarray:
    return 255 - image


class Smooth:
    """Each output is the mean of the frame and the two before it: needs 2 frames of exact context."""

    context = Context(before=2, exact=True)
    one_to_one = True

    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        window: list[np.ndarray] = []
        for frame in frames:
            self.seen.append(frame.index)
            window = [*window[-2:], frame.image.astype(np.float32)]
            yield frame.with_image(np.mean(window, axis=0).round().astype(np.uint8))


class StopAt:
    """Passes frames through until frame `index` arrives, then raises KeyboardInterrupt (a Ctrl-C)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if frame.index == self.index:
                raise KeyboardInterrupt
            yield frame


def images(pattern: Path) -> list[np.ndarray]:
    with open_source(pattern) as reader:
        return [frame.image for frame in reader]


def partial(pattern: Path) -> Path:
    return pattern.parent / f".{pattern.name}.v2v-partial"


def test_resume_writes_only_the_rest_with_the_context_the_stages_need(clip: Path, tmp_path: Path) -> None:
    reference = tmp_path / "ref" / "%04d.png"
    run(clip, [Smooth()], reference, progress=False)
    out = tmp_path / "out" / "%04d.png"
    options = {"kind": "smooth"}
    with pytest.raises(KeyboardInterrupt):
        run(clip, [Smooth(), StopAt(7)], out, progress=False, options=options)
    kept = sorted(p.name for p in partial(out).iterdir() if p.suffix == ".png")
    assert 4 <= len(kept) <= 7 and not list(out.parent.glob("[0-9]*.png"))  # only whole files, all hidden
    resumed = Smooth()
    report = run(clip, [resumed], out, progress=False, resume=True, options=options)
    done = len(kept)
    assert resumed.seen == list(range(done - 2, 12))  # two frames of context, then only the unfinished ones
    assert report.frames_written == 12 and report.frames_read == 12 - (done - 2)
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{n:04d}.png" for n in range(1, 13)]
    for a, b in zip(images(reference), images(out), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stopped_run_is_refused_without_resume_and_restarted_with_overwrite(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "%04d.png"
    with pytest.raises(KeyboardInterrupt):
        run(clip, [MapStage(invert), StopAt(5)], out, progress=False)
    before = sorted(p.name for p in partial(out).iterdir())
    with pytest.raises(OutputError, match="resume"):
        run(clip, [MapStage(invert)], out, progress=False)
    assert sorted(p.name for p in partial(out).iterdir()) == before  # untouched
    counted = []
    run(clip, [MapStage(lambda im: counted.append(1) or invert(im))], out, progress=False, overwrite=True)
    assert len(counted) == 12 and not partial(out).exists()
    assert len(images(out)) == 12


def test_resume_refuses_other_options_and_stages_that_change_the_frame_count(clip: Path, tmp_path: Path) -> None:
    from v2v.restore.interpolate import InterpolateStage

    out = tmp_path / "out" / "%04d.png"
    with pytest.raises(KeyboardInterrupt):
        run(clip, [MapStage(invert), StopAt(5)], out, progress=False, options={"crf": 18})
    with pytest.raises(UsageError, match="options changed.*crf"):
        run(clip, [MapStage(invert)], out, progress=False, resume=True, options={"crf": 20})

    class Doubling:
        one_to_one = False

        def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
            yield from frames

    with pytest.raises(UsageError, match="change the frame count"):
        run(clip, [Doubling()], out, progress=False, resume=True, options={"crf": 18})
    assert len([p for p in partial(out).iterdir() if p.suffix == ".png"]) == 5  # still there
    assert InterpolateStage.one_to_one is False  # the real frame-making stage is refused the same way


def test_resume_after_every_frame_was_finished(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "%04d.png"

    class FailAtEnd:
        def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
            yield from frames
            raise KeyboardInterrupt  # after the last frame, before the images are moved into place

    with pytest.raises(KeyboardInterrupt):
        run(clip, [MapStage(invert), FailAtEnd()], out, progress=False)
    report = run(clip, [MapStage(invert)], out, progress=False, resume=True)
    assert report.frames_written == 12 and len(images(out)) == 12


def test_a_sequence_input_with_start_resumes_where_it_stopped(tmp_path: Path) -> None:
    source = tmp_path / "src" / "%03d.png"
    run(write_clip(tmp_path / "c.mp4", frames=20), [], source, progress=False, start_number=0)
    reference = tmp_path / "ref" / "%03d.png"
    run(source, [Smooth()], reference, progress=False, start=0.2)  # 25 fps: from file 005, numbered as it
    out = tmp_path / "out" / "%03d.png"
    with pytest.raises(KeyboardInterrupt):
        run(source, [Smooth(), StopAt(6)], out, progress=False, start=0.2)
    run(source, [Smooth()], out, progress=False, start=0.2, resume=True)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in reference.parent.iterdir())
    for a, b in zip(images(reference), images(out), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_cli_resumes_a_sequence_killed_with_sigkill(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=40)
    out = tmp_path / "out" / "%04d.png"
    script = textwrap.dedent(f"""
        import time, sys
        from v2v.cli import main
        from v2v.pipeline import MapStage
        import v2v.commands.transcode as transcode
        slow = MapStage(lambda image: (time.sleep(0.1), image)[1])
        original = transcode.build_stages
        transcode.build_stages = lambda args: [*original(args), slow]
        sys.exit(main(["transcode", {str(clip)!r}, "-o", {str(out)!r}, "--no-progress"]))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if partial(out).is_dir() and len(list(partial(out).glob("*.png"))) >= 5:
            break
        time.sleep(0.02)
    assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    kept = len(list(partial(out).glob("*.png")))
    refused = subprocess.run([sys.executable, "-m", "v2v", "transcode", str(clip), "-o", str(out)],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "--resume" in refused.stderr and "Traceback" not in refused.stderr
    resumed = subprocess.run([sys.executable, "-m", "v2v", "transcode", str(clip), "-o", str(out), "--resume",
                              "--no-progress"], capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} frames of" in resumed.stderr  # said how many were kept
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{n:04d}.png" for n in range(1, 41)]
    with open_source(clip) as reader:
        for source, written in zip(reader, images(out), strict=True):
            np.testing.assert_array_equal(source.image, written)
