"""Render v2v's bundled sample: samples/sample.mp4, 3 s of 320x240 at 24 fps with a stereo AAC tune.

The picture has flat colours, soft gradients and edges in motion (what upscalers and restylers are
judged on); the audio is a short arpeggio, so a lost or shifted track is easy to hear. Deterministic:
the same file every time. Usage: python samples/make_sample.py [OUT]
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS, RATE = 320, 240, 24, 3, 48000


def picture(index: int) -> np.ndarray:
    """Frame `index`: a drifting sky gradient, a rolling hill, a bouncing ball and a sliding box."""
    t = index / FPS
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    sky = np.stack([60 + 80 * y / HEIGHT, 120 + 60 * np.sin(x / 80 + t), 200 - 40 * y / HEIGHT], axis=-1)
    image = sky
    hill = HEIGHT * 0.7 + 18 * np.sin(x / 45 + t * 1.5)
    image = np.where((y > hill)[..., None], np.array([40, 140, 60], np.float32) + 20 * np.sin(x / 9)[..., None], image)
    ball_x, ball_y = 40 + (WIDTH - 80) * (0.5 + 0.5 * np.sin(t * 2.1)), 60 + 50 * abs(np.sin(t * 3.3))
    ball = (x - ball_x) ** 2 + (y - ball_y) ** 2 < 22**2
    image[ball] = (235, 70, 50)
    box_x = int((t * 60) % (WIDTH + 40)) - 40
    image[150:190, max(box_x, 0) : max(box_x + 40, 0)] = (250, 220, 90)
    return np.clip(image, 0, 255).astype(np.uint8)


def tune(seconds: float) -> np.ndarray:
    """Stereo float32 (2, samples): an A-minor arpeggio, one note every quarter second."""
    notes = [220.0, 261.63, 329.63, 440.0]
    samples = int(seconds * RATE)
    time = np.arange(samples) / RATE
    freq = np.array(notes)[(time * 4).astype(int) % len(notes)]
    envelope = np.exp(-6 * ((time * 4) % 1))
    wave = 0.25 * envelope * np.sin(2 * np.pi * freq * time)
    return np.stack([wave, 0.8 * wave]).astype(np.float32)


def render(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "medium"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="stereo")
        for index in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(picture(index), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        sound = tune(SECONDS)
        for start in range(0, sound.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(sound[:, start : start + 1024]), format="fltp",
                                               layout="stereo")
            chunk.sample_rate, chunk.pts = RATE, start
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample.mp4")
    print(f"rendered {render(out)}")
