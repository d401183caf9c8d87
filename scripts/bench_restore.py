"""Benchmark: BasicVSR video super-resolution and FFDNet denoising on real clips, against their peers, one run.

Super-resolution (the BI degradation): each clip is downscaled x4 with bicubic (PIL's antialiased bicubic, as
MATLAB's imresize), then upscaled back with BasicVSR Vimeo90K-BI (v2v's VideoSRStage), Real-ESRGAN x4plus
(v2v.restore.upscale.Upscaler) and bicubic; PSNR/SSIM against the original frames with `--border` pixels cropped on
every side for every method. Real-ESRGAN is slow on the CPU, so it runs on the middle `--esrgan-frames` frames only, and
BasicVSR and bicubic are also reported on those same frames.

Denoising: Gaussian noise of sigma 15, 25 and 50 (fixed seed, clipped and rounded to uint8), then v2v's
DenoiseStage with temporal on and off, TemporalFuser on the temporal-off frames (the consistency module's
default fusion), OpenCV's fastNlMeansDenoisingColored per frame and fastNlMeansDenoisingColoredMulti over 5
frames. OpenCV's filter strength h (= hColor) is tuned on the first frame for each clip and sigma from
`H_FACTORS` x sigma, the best PSNR kept, so the peer is not handicapped by a bad setting. Reported: PSNR to the
clean clip and warping error (v2v.metrics, flow of the clean clip).

Speed: marginal frames/s at 640x272 (start-up apart): FFDNet (temporal off and on) from the time between
output frames after the first; BasicVSR from two runs of different lengths ((t_long - t_short) / extra frames),
output 640x272 (input 160x68). Precision: bf16 against fp32, interleaved, on a 192x128 crop (FFDNet) and 4 frames
of 48x32 (BasicVSR): seconds and agreement in dB.

    python scripts/bench_restore.py --sr-frames 6 --dn-frames 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import torch
from bench_sr import clip_path, decode
from PIL import Image

from v2v.consistency import TemporalFuser
from v2v.flow import make_flow_estimator
from v2v.frames import Frame
from v2v.metrics import psnr, score_video, ssim
from v2v.restore.denoise import DenoiseStage
from v2v.restore.video_sr import VideoSRStage

SIGMAS = (15, 25, 50)
H_FACTORS = (0.35, 0.5, 0.75, 1.0)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def crop(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border else image


def fidelity(outputs: list[np.ndarray], clean: list[np.ndarray], border: int) -> dict[str, float]:
    pairs = [(crop(a, border), crop(b, border)) for a, b in zip(outputs, clean, strict=True)]
    return {"psnr": round(float(np.mean([psnr(a, b) for a, b in pairs])), 3),
            "ssim": round(float(np.mean([ssim(a, b) for a, b in pairs])), 4)}  # fmt: skip


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(image, index, pts=index, time_base=Fraction(1, 25)) for index, image in enumerate(images)]


def timed(stage_frames: Iterator[Frame]) -> tuple[list[np.ndarray], list[float]]:
    """The images of a stage's output and the time at which each came out (from the start)."""
    start = time.perf_counter()
    images, stamps = [], []
    for frame in stage_frames:
        images.append(frame.image)
        stamps.append(time.perf_counter() - start)
    return images, stamps


def marginal_fps(stamps: list[float]) -> float | None:
    """Frames/s after the first output frame (start-up and the first frame apart)."""
    if len(stamps) < 2:
        return None
    return round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 4)


def bench_sr(clean: list[np.ndarray], esrgan_frames: int, border: int) -> dict[str, Any]:
    from v2v.restore.sr_models import load_model
    from v2v.restore.upscale import Upscaler

    height, width = clean[0].shape[:2]
    low = [resize(image, width // 4, height // 4) for image in clean]
    result: dict[str, Any] = {"frames": len(clean), "input": f"{width // 4}x{height // 4}", "border": border}
    stage = VideoSRStage("basicvsr-vimeo90k-bi", device="cpu")
    basicvsr, stamps = timed(stage.process(iter(as_frames(low))))
    result["basicvsr_seconds"] = round(stamps[-1], 2)
    result["basicvsr_dtype"] = str(stage.dtype).removeprefix("torch.")
    bicubic = [resize(image, width, height) for image in low]
    result["basicvsr"] = fidelity(basicvsr, clean, border)
    result["bicubic"] = fidelity(bicubic, clean, border)
    result["basicvsr_gain_db"] = round(result["basicvsr"]["psnr"] - result["bicubic"]["psnr"], 3)
    # Real-ESRGAN on the middle frames; the others on the same frames beside it
    first = max(0, (len(clean) - esrgan_frames) // 2)
    picked = slice(first, first + esrgan_frames)
    upscaler = Upscaler(load_model("realesrgan-x4plus"), device="cpu")
    started = time.perf_counter()
    esrgan = [upscaler.upscale_images([image])[0] for image in low[picked]]
    result["esrgan_subset"] = {
        "frames": [first, first + esrgan_frames], "dtype": str(upscaler.dtype).removeprefix("torch."),
        "seconds_per_frame": round((time.perf_counter() - started) / max(1, esrgan_frames), 2),
        "realesrgan_x4plus": fidelity(esrgan, clean[picked], border),
        "basicvsr": fidelity(basicvsr[picked], clean[picked], border),
        "bicubic": fidelity(bicubic[picked], clean[picked], border),
    }
    return result


def nlm(images: list[np.ndarray], h: float, multi: bool) -> list[np.ndarray]:
    bgr = [cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in images]
    out = []
    for index in range(len(bgr)):
        if multi:  # 5 frames centred on this one (fewer at the clip's ends, where OpenCV needs a centred window)
            half = min(2, index, len(bgr) - 1 - index)
            result = cv2.fastNlMeansDenoisingColoredMulti(bgr, index, 2 * half + 1, None, h, h, 7, 21)
        else:
            result = cv2.fastNlMeansDenoisingColored(bgr[index], None, h, h, 7, 21)
        out.append(cv2.cvtColor(result, cv2.COLOR_BGR2RGB))
    return out


def bench_denoise(clean: list[np.ndarray], seed: int) -> dict[str, Any]:
    estimator = make_flow_estimator("dis")
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"frames": len(clean)}

    def scored(images: list[np.ndarray]) -> dict[str, float]:
        scores = score_video(images, clean, estimator)
        return {"psnr": round(float(np.mean([psnr(a, b) for a, b in zip(images, clean, strict=True)])), 3),
                "warping_error": round(float(scores.warping_error or 0.0), 7)}  # fmt: skip

    for sigma in SIGMAS:
        noisy = [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).round().astype(np.uint8) for image in clean]
        row: dict[str, Any] = {"noisy": scored(noisy)}
        plain = DenoiseStage(sigma, temporal=False, device="cpu")
        row["dtype"] = str(plain.dtype).removeprefix("torch.")
        off, off_stamps = timed(plain.process(iter(as_frames(noisy))))
        on, on_stamps = timed(DenoiseStage(sigma, temporal=True, device="cpu").process(iter(as_frames(noisy))))
        fuser = TemporalFuser(estimator=estimator)
        row["v2v_temporal_on"] = {**scored(on), "fps": marginal_fps(on_stamps)}
        row["v2v_temporal_off"] = {**scored(off), "fps": marginal_fps(off_stamps)}
        row["off_then_temporal_fuser"] = scored([fuser.fuse(image, image) for image in off])
        best_h = max((factor * sigma for factor in H_FACTORS),
                     key=lambda h: psnr(nlm(noisy[:1], h, False)[0], clean[0]))
        row["opencv_h"] = best_h
        started = time.perf_counter()
        row["opencv_nlm"] = scored(nlm(noisy, best_h, multi=False))
        row["opencv_nlm"]["fps"] = round(len(noisy) / (time.perf_counter() - started), 4)
        started = time.perf_counter()
        row["opencv_nlm_multi5"] = scored(nlm(noisy, best_h, multi=True))
        row["opencv_nlm_multi5"]["fps"] = round(len(noisy) / (time.perf_counter() - started), 4)
        best_opencv = max(row["opencv_nlm"]["psnr"], row["opencv_nlm_multi5"]["psnr"])
        row["on_minus_best_opencv_db"] = round(row["v2v_temporal_on"]["psnr"] - best_opencv, 3)
        result[str(sigma)] = row
    return result


def basicvsr_marginal_fps(clean: list[np.ndarray], short: int) -> float:
    height, width = clean[0].shape[:2]
    low = [resize(image, width // 4, height // 4) for image in clean]
    times = {}
    for count in (short, len(low)):
        stage = VideoSRStage("basicvsr-vimeo90k-bi", device="cpu")
        _, stamps = timed(stage.process(iter(as_frames(low[:count]))))
        times[count] = stamps[-1]
    return round((len(low) - short) / (times[len(low)] - times[short]), 4)


def bench_dtypes(clean: list[np.ndarray], rounds: int = 3) -> dict[str, Any]:
    """bf16 against fp32 on this CPU, side by side: seconds (best of `rounds`, interleaved) and agreement in dB."""
    import copy

    from v2v.frames import images_to_tensor, tensor_to_images
    from v2v.restore.registry import lookup

    crop = [np.ascontiguousarray(image[60:188, 200:392]) for image in clean]  # 192x128
    rng = np.random.default_rng(1)
    noisy = np.clip(crop[0] + rng.normal(0, 25, crop[0].shape), 0, 255).round().astype(np.uint8)
    networks = {"fp32": lookup("ffdnet").load()}
    networks["bf16"] = copy.deepcopy(networks["fp32"]).to(torch.bfloat16)
    level = torch.full((1, 1, 1, 1), 25 / 255)
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    outputs = {}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, network in networks.items():
                x = images_to_tensor([noisy], dtype=network.model[0].weight.dtype)
                started = time.perf_counter()
                outputs[name] = tensor_to_images(network(x, level))[0]
                seconds[name].append(time.perf_counter() - started)
    result: dict[str, Any] = {"ffdnet_192x128": {
        "seconds": {name: round(min(values), 3) for name, values in seconds.items()},
        "bf16_vs_fp32_db": round(psnr(outputs["bf16"], outputs["fp32"]), 2),
        "psnr_to_clean": {name: round(psnr(image, crop[0]), 3) for name, image in outputs.items()}}}  # fmt: skip
    low = [resize(image, 48, 32) for image in crop[:4]]
    times, images = {}, {}
    for name in ("fp32", "bf16", "fp32", "bf16"):
        stage = VideoSRStage("basicvsr-vimeo90k-bi", device="cpu", dtype=name)
        images[name], stamps = timed(stage.process(iter(as_frames(low))))
        times[name] = min(times.get(name, math.inf), stamps[-1])
    result["basicvsr_4x48x32"] = {
        "seconds": {name: round(value, 2) for name, value in times.items()},
        "bf16_vs_fp32_db": round(min(psnr(a, b) for a, b in zip(images["bf16"], images["fp32"], strict=True)), 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", default=["bikes.mp4", "carphone_pristine.mp4"])
    parser.add_argument("--sr-frames", type=int, default=6)
    parser.add_argument("--esrgan-frames", type=int, default=2)
    parser.add_argument("--dn-frames", type=int, default=8)
    parser.add_argument("--speed-frames", type=int, default=4, help="BasicVSR marginal rate: runs of 2 and this many")
    parser.add_argument("--border", type=int, default=8, help="pixels cropped on each side for SR scores")
    parser.add_argument("--skip", nargs="*", default=[], choices=("sr", "denoise", "speed", "dtypes"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default torch's; 1 on a shared, loaded CPU, where a pool of 2 waits)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict[str, Any] = {"bench": "restore", "torch_threads": torch.get_num_threads(),
                              "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}  # fmt: skip
    steps: list[tuple[str, Callable[[], None]]] = []
    frames = {name: decode(clip_path(name), max(args.sr_frames, args.dn_frames, args.speed_frames))
              for name in args.clips}  # fmt: skip
    if "sr" not in args.skip:
        steps.append(("sr", lambda: report.setdefault("sr", {}).update(
            {name: bench_sr(images[: args.sr_frames], args.esrgan_frames, args.border)
             for name, images in frames.items()})))  # fmt: skip
    if "denoise" not in args.skip:
        steps.append(("denoise", lambda: report.setdefault("denoise", {}).update(
            {name: bench_denoise(images[: args.dn_frames], seed=0) for name, images in frames.items()})))
    if "speed" not in args.skip and "bikes.mp4" in frames:
        steps.append(("speed", lambda: report.setdefault("speed", {}).update(
            {"basicvsr_fps_out_640x272": basicvsr_marginal_fps(frames["bikes.mp4"][: args.speed_frames], 2)})))
    if "dtypes" not in args.skip and "bikes.mp4" in frames:
        steps.append(("dtypes", lambda: report.update({"dtypes": bench_dtypes(frames["bikes.mp4"])})))
    for _, step in steps:
        step()
    if "denoise" in report and "bikes.mp4" in report["denoise"]:
        row = report["denoise"]["bikes.mp4"]["25"]
        report.setdefault("speed", {}).update({"ffdnet_fps_640x272_temporal_off": row["v2v_temporal_off"]["fps"],
                                               "ffdnet_fps_640x272_temporal_on": row["v2v_temporal_on"]["fps"]})
    targets: dict[str, bool] = {}
    for name, sr in report.get("sr", {}).items():
        targets[f"basicvsr_ge_bicubic_plus_1.5db_{name}"] = sr["basicvsr_gain_db"] >= 1.5
    for name, rows in report.get("denoise", {}).items():
        targets[f"on_ge_best_opencv_plus_1db_sigma25_{name}"] = rows["25"]["on_minus_best_opencv_db"] >= 1.0
        for sigma in SIGMAS:
            row = rows[str(sigma)]
            targets[f"warp_on_lt_off_sigma{sigma}_{name}"] = (
                row["v2v_temporal_on"]["warping_error"] < row["v2v_temporal_off"]["warping_error"])
    report["targets"] = targets
    report["load_after"] = os.getloadavg()[0]
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
