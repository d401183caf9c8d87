"""Benchmark `v2v restyle`'s stage against the plainest per-frame diffusers loop, on real frames, in one process.

Wall time of v2v's stage with temporal off vs a plain loop over `StableDiffusionControlNetImg2ImgPipeline` (same
frames, steps, strength, seed, Canny control), both after loading and one warm-up run; warping error (Lai et al.
2018: flow of the *source* clip, occlusion-masked MSE in [0, 1]) of the output with temporal on vs off; keyframe
mode's speed-up over diffusing every frame (both with temporal on). Tiny random SD + Canny ControlNet
(`tests/tiny_diffusion.py`), CPU.

Prints one JSON line. Example:
    python scripts/bench_restyle_stage.py --frames 8 --steps 4 --strength 0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_restyle_common import make_parser, plain_loop, read_frames, run_case, timed, v2v_run, warping_error


def case_stage(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """The stage against the plain per-frame loop, in this process: time, CPU time, warping errors, keyframes."""
    from v2v.flow import make_flow_estimator

    frames = read_frames(clip, args.frames)
    sources = [frame.image for frame in frames]
    runs = {
        "peer": plain_loop(models, sources, args),
        "off": v2v_run(models, frames, args, temporal=False),
        "on": v2v_run(models, frames, args, temporal=True),
        "on_no_fusion": v2v_run(models, frames, args, temporal=True, fusion=0.0),
        "keyframes": v2v_run(models, frames, args, temporal=True, keyframe_every=args.keyframe_every),
    }
    best = timed(runs, args.rounds)
    (peer_seconds, peer_cpu, peer_out), (off_seconds, off_cpu, off_out) = best["peer"], best["off"]
    (on_seconds, _, on_out), (key_seconds, _, key_out) = best["on"], best["keyframes"]
    no_fusion_out = best["on_no_fusion"][2]
    dis = make_flow_estimator("dis")
    flows = [dis.pair(a, b) for a, b in zip(sources, sources[1:], strict=False)]
    error_peer, masked = warping_error(peer_out, sources, flows)
    error_off, _ = warping_error(off_out, sources, flows)
    error_on, _ = warping_error(on_out, sources, flows)
    error_key, _ = warping_error(key_out, sources, flows)
    error_no_fusion, _ = warping_error(no_fusion_out, sources, flows)
    height, width = sources[0].shape[:2]
    return {
        "frames": len(frames),
        "size": f"{width}x{height}",
        "peer": "StableDiffusionControlNetImg2ImgPipeline, one call per frame",
        "peer_seconds": round(peer_seconds, 2),
        "v2v_off_seconds": round(off_seconds, 2),
        "time_ratio_off_vs_peer": round(off_seconds / peer_seconds, 3),
        "peer_cpu_seconds": round(peer_cpu, 2),
        "v2v_off_cpu_seconds": round(off_cpu, 2),
        "cpu_ratio_off_vs_peer": round(off_cpu / peer_cpu, 3),
        "v2v_on_seconds": round(on_seconds, 2),
        "v2v_keyframe_seconds": round(key_seconds, 2),
        "keyframe_every": args.keyframe_every,
        "keyframe_speedup_vs_on": round(on_seconds / key_seconds, 2),
        "warping_error_peer": round(error_peer, 6),
        "warping_error_off": round(error_off, 6),
        "warping_error_on": round(error_on, 6),
        "warping_error_keyframes": round(error_key, 6),
        "warping_error_on_without_flow_fusion": round(error_no_fusion, 6),
        "warping_ratio_on_vs_off": round(error_on / error_off, 3),
        "masked_fraction": round(masked, 3),
    }


def main() -> None:
    args = make_parser(__doc__, "frames", "keyframe_every").parse_args()
    run_case(args, case_stage, None)

if __name__ == "__main__":
    main()
