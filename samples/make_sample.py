"""Render v2v's bundled sample: samples/sample.mp4, 3 s of 320x240 at 24 fps with a stereo AAC tune.

The picture has flat colours, soft gradients and edges in motion (what upscalers and restylers are
judged on); the audio is a short arpeggio, so a lost or shifted track is easy to hear. Deterministic:
the same file every time. Usage: python samples/make_sample.py [OUT] [--truth-masks DIR]

--truth-masks DIR also writes the ball's true mask for every frame (DIR/00000.png, ..., white = ball), what a
carried mask is measured against (scripts/bench_mask.py); `ball_mask(index)` gives the same to code.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS, RATE = 320, 240, 24, 3, 48000
BALL_RADIUS = 22


def ball(index: int) -> tuple[float, float]:
    """The ball's centre (x, y) in frame `index`: it swings across the frame and bounces (up to 12 pixels a frame)."""
    t = index / FPS
    return 40 + (WIDTH - 80) * (0.5 + 0.5 * np.sin(t * 2.1)), 60 + 50 * abs(np.sin(t * 3.3))


def ball_mask(index: int) -> np.ndarray:
    """bool (HEIGHT, WIDTH): the pixels the ball covers in frame `index` (the box and hill never reach it)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ball_x, ball_y = ball(index)
    return (x - ball_x) ** 2 + (y - ball_y) ** 2 < BALL_RADIUS**2


def picture(index: int) -> np.ndarray:
    """Frame `index`: a drifting sky gradient, a rolling hill, a bouncing ball and a sliding box."""
    t = index / FPS
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    sky = np.stack([60 + 80 * y / HEIGHT, 120 + 60 * np.sin(x / 80 + t), 200 - 40 * y / HEIGHT], axis=-1)
    image = sky
    hill = HEIGHT * 0.7 + 18 * np.sin(x / 45 + t * 1.5)
    image = np.where((y > hill)[..., None], np.array([40, 140, 60], np.float32) + 20 * np.sin(x / 9)[..., None], image)
    image[ball_mask(index)] = (235, 70, 50)
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


def write_truth_masks(folder: Path) -> Path:
    """The ball's mask of every frame as DIR/00000.png, ... (grey, 255 = ball)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(FPS * SECONDS):
        cv2.imwrite(str(folder / f"{index:05d}.png"), ball_mask(index).astype(np.uint8) * 255)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="render v2v's bundled sample")
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).with_name("sample.mp4"))
    parser.add_argument("--truth-masks", type=Path, metavar="DIR", help="also write the ball's true mask per frame")
    args = parser.parse_args()
    print(f"rendered {render(args.out)}")
    if args.truth_masks:
        print(f"ball masks in {write_truth_masks(args.truth_masks)}")
