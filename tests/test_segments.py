"""Segments: cuts on keyframes, joins that keep every frame once, resume after a kill, and Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import kill_after_a_segment, write_clip

from v2v.errors import InputError, OutputError, UsageError, V2VError
from v2v.io.reader import open_source
from v2v.io.writer import Encoding
from v2v.pipeline import MapStage, run
from v2v.segments import default_work_dir, plan_segments, run_segmented

GOP = {"g": "10", "keyint_min": "10", "sc_threshold": "0"}


def invert() -> list[MapStage]:
    return [MapStage(lambda image: 255 - image)]


@pytest.fixture
def gop_clip(tmp_path: Path) -> Path:
    """60 frames at 25 fps, a keyframe every 10 frames, with AAC audio."""
    return write_clip(tmp_path / "gop.mp4", frames=60, width=96, height=64, fps=25, audio=True, options=GOP)


def decoded(path: Path) -> tuple[list[float], list[np.ndarray]]:
    with open_source(path) as reader:
        frames = list(reader)
    return [f.time for f in frames], [f.image for f in frames]


def audio_bytes(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def keyframe_indices(path: Path) -> set[int]:
    with av.open(str(path)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    order = sorted(pts for pts, _ in packets)
    return {order.index(pts) for pts, key in packets if key}


def test_segments_start_on_keyframes_and_cover_every_frame_once(gop_clip: Path) -> None:
    plan = plan_segments(gop_clip, segment_seconds=0.5, overlap=3)
    keys = keyframe_indices(gop_clip)
    assert keys == {0, 10, 20, 30, 40, 50}
    assert [(s.first, s.end) for s in plan.segments] == [(0, 20), (20, 40), (40, 60)]
    assert all(s.first in keys for s in plan.segments)
    assert [s.context for s in plan.segments] == [0, 17, 37]


class RecordIndices:
    """Records (index, pts) of the frames a stage sees."""

    seen: list[tuple[int, int]] = []

    def process(self, frames):
        for frame in frames:
            RecordIndices.seen.append((frame.index, frame.pts))
            yield frame


def test_stages_see_clip_wide_frame_numbers_in_every_segment(gop_clip: Path, tmp_path: Path) -> None:
    RecordIndices.seen = []
    run_segmented(gop_clip, lambda: [RecordIndices()], tmp_path / "o.mp4", segment_seconds=0.5, overlap=3,
                  start=0.2, progress=False)
    single = []
    with open_source(gop_clip, start=0.2) as reader:
        single = [(frame.index, frame.pts) for frame in reader]
    # each segment re-sees its context frames, with the same numbers and timestamps as a single pass
    assert sorted(set(RecordIndices.seen)) == single
    assert len(RecordIndices.seen) == len(single) + 2 * 3


def test_segmented_run_equals_single_pass(gop_clip: Path, tmp_path: Path) -> None:
    lossless = Encoding(codec="ffv1")
    single, segmented = tmp_path / "single.mkv", tmp_path / "segmented.mkv"
    run(gop_clip, invert(), single, encoding=lossless, progress=False)
    report = run_segmented(gop_clip, invert, segmented, encoding=lossless, segment_seconds=0.5, overlap=4,
                           progress=False)
    assert report.frames_written == 60
    times_a, images_a = decoded(single)
    times_b, images_b = decoded(segmented)
    assert times_a == times_b
    assert all(np.array_equal(a, b) for a, b in zip(images_a, images_b, strict=True))
    assert audio_bytes(segmented) == audio_bytes(single) == audio_bytes(gop_clip)
    assert not Path(default_work_dir(str(segmented))).exists()  # cleaned up once joined


def test_trimmed_segmented_run_matches_trimmed_single_pass(gop_clip: Path, tmp_path: Path) -> None:
    single, segmented = tmp_path / "single.mp4", tmp_path / "segmented.mp4"
    run(gop_clip, (), single, start=0.4, end=2.0, progress=False)
    run_segmented(gop_clip, list, segmented, start=0.4, end=2.0, segment_seconds=0.5, progress=False)
    assert decoded(single)[0] == decoded(segmented)[0]
    assert audio_bytes(single) == audio_bytes(segmented)


KILLABLE = """
import sys, time
from v2v.pipeline import MapStage
from v2v.io.writer import Encoding
from v2v.segments import run_segmented

def slow_invert():
    def invert(image):
        time.sleep(0.08)
        return 255 - image
    return [MapStage(invert)]

run_segmented(sys.argv[1], slow_invert, sys.argv[2], options={"stage": "invert"}, encoding=Encoding(codec="ffv1"),
              resume=True, segment_seconds=0.5, overlap=2, progress=False)
"""


def test_kill_then_resume_gives_every_frame_once(gop_clip: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "resumed.mkv"
    manifest = Path(default_work_dir(str(out))) / "manifest.json"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(gop_clip), str(out)])
    kill_after_a_segment(process, manifest)
    assert not out.exists()
    # resume in this process, with the same options and a fast stage that computes the same pixels
    report = run_segmented(gop_clip, invert, out, options={"stage": "invert"}, encoding=Encoding(codec="ffv1"),
                           resume=True, segment_seconds=0.5, overlap=2, progress=False)
    assert report.frames_written == 60
    assert "resuming" in caplog.text
    reference = tmp_path / "reference.mkv"
    run(gop_clip, invert(), reference, encoding=Encoding(codec="ffv1"), progress=False)
    times_ref, images_ref = decoded(reference)
    times_out, images_out = decoded(out)
    assert times_out == times_ref and len(set(times_out)) == 60
    assert all(np.array_equal(a, b) for a, b in zip(images_ref, images_out, strict=True))
    assert audio_bytes(out) == audio_bytes(gop_clip)


class Explode:
    """A stage that fails at the frame with timestamp >= `at` seconds."""

    def __init__(self, at: float) -> None:
        self.at = at

    def process(self, frames):
        for frame in frames:
            if frame.time is not None and frame.time >= self.at:
                raise RuntimeError("out of memory (simulated)")
            yield frame


def test_resume_refuses_changed_options_other_input_and_damaged_manifest(gop_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    common = dict(resume=True, segment_seconds=0.5, progress=False)
    with pytest.raises(RuntimeError, match="simulated"):
        run_segmented(gop_clip, lambda: [Explode(1.0)], out, options={"scale": 2}, **common)
    work = Path(default_work_dir(str(out)))
    states = [s["state"] for s in json.loads((work / "manifest.json").read_text())["segments"]]
    assert states[0] == "done" and not out.exists()
    with pytest.raises(UsageError, match="options changed.*scale: 2 -> 4"):
        run_segmented(gop_clip, list, out, options={"scale": 4}, **common)
    with pytest.raises(OutputError, match="resume"):
        run_segmented(gop_clip, list, out, options={"scale": 2}, segment_seconds=0.5, progress=False)
    other = write_clip(tmp_path / "other.mp4", frames=60, width=96, height=64, fps=25, options=GOP)
    with pytest.raises(InputError, match="another input"):
        run_segmented(other, list, out, options={"scale": 2}, **common)
    (work / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="damaged manifest"):
        run_segmented(gop_clip, list, out, options={"scale": 2}, **common)


# --- Ray -------------------------------------------------------------------------------------------------


def test_ray_two_workers_give_the_same_frames_as_local(local_ray, gop_clip: Path, tmp_path: Path) -> None:
    # lossless, so the comparison is of the frames Ray computed, not of x264, which encoded a segment
    # differently (up to 8 levels) now and then when two workers started at once
    here, there = tmp_path / "local.mkv", tmp_path / "ray.mkv"
    lossless = Encoding(codec="ffv1")
    run_segmented(gop_clip, invert, here, encoding=lossless, segment_seconds=0.5, overlap=2, progress=False)
    run_segmented(gop_clip, invert, there, encoding=lossless, segment_seconds=0.5, overlap=2, backend="ray",
                  workers=2, progress=False)
    times_a, images_a = decoded(here)
    times_b, images_b = decoded(there)
    assert times_a == times_b and len(times_a) == 60
    pairs = enumerate(zip(images_a, images_b, strict=True))
    differences = {i: int(np.abs(a.astype(int) - b).max()) for i, (a, b) in pairs}
    assert not any(differences.values()), {i: d for i, d in differences.items() if d}
    assert audio_bytes(there) == audio_bytes(gop_clip)


def dies_once(marker: str):
    """A stage factory whose worker process dies the first time it runs (a crash, an OOM kill)."""

    def make() -> list[MapStage]:
        if not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        return invert()

    return make


def always_dies() -> list[MapStage]:
    os._exit(1)


def test_a_workers_error_raised_here_still_names_its_parameters() -> None:
    exceptions = pytest.importorskip("ray.exceptions")
    from v2v.commands.common import error_message

    try:
        raise UsageError.naming("{true_cfg} does nothing without {negative_prompt}")
    except UsageError as cause:  # what ray_tasks re-raises: Ray's error standing for the worker's one
        here = exceptions.RayTaskError("segment", "Traceback (most recent call last): ...", cause).as_instanceof_cause()
    assert isinstance(here, UsageError)
    assert error_message(here) == "--true-cfg does nothing without --negative-prompt"


def test_a_worker_that_dies_is_retried_then_reported(local_ray, gop_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "retried.mp4"
    run_segmented(gop_clip, dies_once(str(tmp_path / "died")), out, segment_seconds=0.5, backend="ray", workers=1,
                  progress=False)
    assert len(decoded(out)[0]) == 60
    doomed = tmp_path / "doomed.mp4"
    with pytest.raises(V2VError, match="worker died 2 times"):
        run_segmented(gop_clip, always_dies, doomed, segment_seconds=0.5, backend="ray", workers=1, retries=1,
                      progress=False)
    assert not doomed.exists()


SLOW_TRANSCODE = """
import sys, time
import v2v.commands.transcode as transcode
from v2v.cli import main
from v2v.pipeline import MapStage

def slowly(image):
    time.sleep(0.05)
    return image

plain = transcode.run_pipeline
transcode.run_pipeline = lambda args, stages: plain(args, [MapStage(slowly)])
sys.exit(main(["transcode", *sys.argv[1:]]))
"""


def test_a_plain_run_killed_part_way_resumes_and_cleans_up(tmp_path: Path) -> None:
    """No --resume on the first run: a run of several segments keeps resume data by default."""
    source = write_clip(tmp_path / "long.mp4", frames=60, width=96, height=64, fps=25, audio=True, options=GOP)
    out = tmp_path / "out.mkv"
    work = Path(default_work_dir(str(out)))
    options = [str(source), "-o", str(out), "--codec", "ffv1", "--segment-seconds", "0.4", "--no-progress"]
    command = [sys.executable, "-m", "v2v", "transcode", *options]
    process = subprocess.Popen([sys.executable, "-c", SLOW_TRANSCODE, *options], stderr=subprocess.DEVNULL)
    kill_after_a_segment(process, work / "manifest.json")
    assert not out.exists() and work.exists()
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr  # a work folder is never silently reused
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    finished = int(resumed.stderr.split("resuming: ")[1].split(" of ")[0])
    assert finished >= 1  # only unfinished segments were redone
    times, images = decoded(out)
    reference = tmp_path / "reference.mkv"
    run(source, [], reference, encoding=Encoding(codec="ffv1"), progress=False)
    assert times == decoded(reference)[0] and len(set(times)) == 60
    assert all(np.array_equal(a, b) for a, b in zip(decoded(reference)[1], images, strict=True))
    assert audio_bytes(out) == audio_bytes(source)
    assert not work.exists()  # removed after success


def test_short_runs_and_inexact_stages_are_not_segmented_by_default(tmp_path: Path) -> None:
    import argparse

    from v2v.commands.common import _resumable_by_default
    from v2v.pipeline import Context

    source = write_clip(tmp_path / "clip.mp4", frames=20, fps=25)  # 0.8 s
    args = argparse.Namespace(input=str(source), output=str(tmp_path / "o.mp4"), start=0.0, end=None,
                              max_frames=None, segment_seconds=0.4, no_resume_data=False)
    assert _resumable_by_default(args, [])
    assert not _resumable_by_default(argparse.Namespace(**{**vars(args), "segment_seconds": 10.0}), [])
    assert not _resumable_by_default(argparse.Namespace(**{**vars(args), "no_resume_data": True}), [])

    class Running:
        context = Context(before=8, exact=False)

        def process(self, frames):
            return frames

    assert not _resumable_by_default(args, [Running()])


def pid_stage_factory(record: str):
    """A stage factory that notes the process it runs in each time it is called (a model load)."""

    def make() -> list[MapStage]:
        with open(record, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return invert()

    return make


def test_ray_workers_build_their_stages_once(local_ray, gop_clip: Path, tmp_path: Path) -> None:
    record = tmp_path / "loads.txt"
    run_segmented(gop_clip, pid_stage_factory(str(record)), tmp_path / "out.mp4", segment_seconds=0.5,
                  backend="ray", workers=1, progress=False)
    loads = record.read_text().split()
    assert len(loads) == len(set(loads)) >= 1  # once per worker process, not once per segment (3 segments)


def test_a_joined_file_keeps_frame_durations_and_its_duration(gop_clip: Path, tmp_path: Path) -> None:
    """Segments may be MP4 (another time base) joined into Matroska: durations are rescaled with the timestamps,
    so the output lasts as long as a single pass's and reads back undamaged."""
    single, joined = tmp_path / "single.mkv", tmp_path / "joined.mkv"
    run(gop_clip, [], single, encoding=Encoding(codec="ffv1"), progress=False)
    run_segmented(gop_clip, list, joined, encoding=Encoding(codec="ffv1"), segment_seconds=0.5, progress=False)
    durations = []
    for path in (single, joined):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            durations.append((container.duration, {p.duration for p in container.demux(stream) if p.size}))
    assert durations[0] == durations[1]
    with open_source(joined) as reader:
        assert len(list(reader)) == 60 and reader.damage is None
