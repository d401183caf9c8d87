"""Benchmark the whole `python -m v2v restyle --temporal off` command against a plain diffusers loop, per frame.

The marginal time per frame of the command (decode, stage and encode overlapping, torch at its default threads) vs
a plain `StableDiffusionControlNetImg2ImgPipeline` loop in this process at the same default threads: each run on two
frame counts, the difference divided by the frame difference, so start-up and model loading cancel out. Tiny random
SD + Canny ControlNet (`tests/tiny_diffusion.py`), CPU.

Prints one JSON line. Example:
    python scripts/bench_restyle_cli_marginal.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_restyle_common import make_parser, plain_loop, read_frames, run_case


def case_cli_marginal(models: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """Marginal seconds per frame of `python -m v2v restyle --temporal off` (the whole command, default threads)
    vs the plain loop, from runs on `--marginal-frames` A and B frames, interleaved, fastest of `--rounds`."""
    few, many = args.marginal_frames
    sources = [frame.image for frame in read_frames(clip, many)]
    peer = {count: plain_loop(models, sources[:count], args) for count in (few, many)}
    command = [
        sys.executable, "-m", "v2v", "restyle", str(clip), "--model", str(models / "sd"), "--controlnet",
        str(models / "controlnet"), "--control", "canny", "--prompt", args.prompt, "--negative-prompt",
        args.negative_prompt, "--strength", str(args.strength), "--steps", str(args.steps), "--guidance",
        str(args.guidance), "--seed", str(args.seed), "--temporal", "off", "--no-progress", "--overwrite",
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    best: dict[tuple[str, int], tuple[float, float]] = {}  # (contender, frames) -> (wall, CPU) seconds
    peer[few]()  # warm-up
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for count in (few, many):
                output = str(Path(scratch) / f"out{count}.mp4")
                wall, cpu = time.perf_counter(), children_cpu()
                subprocess.run([*command, "-o", output, "--max-frames", str(count)], check=True, env=environment)
                cli = (time.perf_counter() - wall, children_cpu() - cpu)
                wall, cpu = time.perf_counter(), time.process_time()
                peer[count]()
                plain = (time.perf_counter() - wall, time.process_time() - cpu)
                for key, seconds in ((("cli", count), cli), (("peer", count), plain)):
                    if key not in best or seconds[0] < best[key][0]:
                        best[key] = seconds

    def marginal(who: str, which: int) -> float:
        return (best[who, many][which] - best[who, few][which]) / (many - few)

    return {
        "marginal_frames": [few, many],
        "cli_command": " ".join(command[1:4]) + " ... --temporal off",
        "cli_wall_seconds": {str(n): round(best["cli", n][0], 2) for n in (few, many)},
        "peer_loop_wall_seconds": {str(n): round(best["peer", n][0], 2) for n in (few, many)},
        "cli_marginal_seconds_per_frame": round(marginal("cli", 0), 3),
        "peer_marginal_seconds_per_frame": round(marginal("peer", 0), 3),
        "marginal_ratio_cli_vs_peer": round(marginal("cli", 0) / marginal("peer", 0), 3),
        "cli_marginal_cpu_seconds_per_frame": round(marginal("cli", 1), 3),
        "peer_marginal_cpu_seconds_per_frame": round(marginal("peer", 1), 3),
        "marginal_cpu_ratio_cli_vs_peer": round(marginal("cli", 1) / marginal("peer", 1), 3),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
    }


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    args = make_parser(__doc__, "marginal_frames").parse_args()
    run_case(args, case_cli_marginal, "cli_marginal")

if __name__ == "__main__":
    main()
