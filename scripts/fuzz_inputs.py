"""Fuzz v2v's input handling: damaged files must give success or one clean error line, never a crash.

Builds small valid clips in several container/codec pairs with PyAV, mutates them deterministically from a
seed (flipped bytes, truncation, duplicated and swapped chunks, zeroed ranges, broken size fields: MP4 box
sizes, EBML element sizes, RIFF chunk sizes), and runs `python -m v2v probe` and `python -m v2v transcode` on
each in a subprocess with a time limit. A run passes when it exits 0 (transcode: the output is there and
decodes) or exits 1/2 with a `v2v: error:` line, with no traceback, no "internal error", no signal death, no
hang, and nothing but the finished output left in the output folder.

    python scripts/fuzz_inputs.py --cases 500 --seed 0 [--jobs 2] [--timeout 60]

Prints one JSON line of counts, then one line per fault (case, command, kind, the stderr's last line).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# name -> (suffix, video codec, pix_fmt, audio codec or None, audio sample format)
SEEDS: dict[str, tuple[str, str, str, str | None, str]] = {
    "mp4-h264-aac": (".mp4", "libx264", "yuv420p", "aac", "fltp"),
    "mkv-ffv1-flac": (".mkv", "ffv1", "yuv420p", "flac", "s16"),
    "webm-vp9-opus": (".webm", "libvpx-vp9", "yuv420p", "libopus", "flt"),
    "mov-prores-pcm": (".mov", "prores_ks", "yuv422p10le", "pcm_s16le", "s16"),
    "avi-mjpeg-mp3": (".avi", "mjpeg", "yuvj420p", "libmp3lame", "fltp"),
    "ts-mpeg2-mp2": (".ts", "mpeg2video", "yuv420p", "mp2", "s16"),
    "mkv-h264-noaudio": (".mkv", "libx264", "yuv420p", None, ""),
}
MUTATIONS = ("flip", "truncate", "duplicate", "swap", "zero", "size_field")
FRAMES, WIDTH, HEIGHT, FPS = 12, 64, 48, 10


def picture(index: int) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([x * 4 % 256, y * 5 % 256, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    left = index * 4 % (WIDTH - 8)
    image[12:20, left : left + 8] = 255
    return image


def build_seed(path: Path, video: str, pix_fmt: str, audio: str | None, sample_format: str) -> None:
    """A 12-frame 64x48 clip at 10 fps, with a 1.2 s tone when `audio` is given."""
    # bitexact: no random segment UID or date (Matroska), so a case number always makes the same bytes
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(video, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        if video == "libx264":
            stream.options = {"preset": "ultrafast", "g": "5"}
        elif video == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "g": "5"}
        sound = None
        if audio:
            rate = 48000 if audio == "libopus" else 44100
            sound = container.add_stream(audio, rate=rate, layout="mono")
            sound.format = sample_format
        for index in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(picture(index), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if sound is not None:
            rate = sound.codec_context.sample_rate
            step = sound.codec_context.frame_size or 1024
            samples = int(FRAMES / FPS * rate)
            tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)
            for begin in range(0, samples, step):
                chunk = tone[None, begin : begin + step]
                if chunk.shape[1] < step and sound.codec_context.frame_size:
                    chunk = np.pad(chunk, ((0, 0), (0, step - chunk.shape[1])))
                if sample_format.startswith("s16"):
                    data = (chunk * 32767).astype(np.int16)
                else:
                    data = chunk.astype(np.float32)
                frame = av.AudioFrame.from_ndarray(data, format=sample_format.rstrip("p"), layout="mono")
                frame.sample_rate, frame.pts = rate, begin
                container.mux(sound.encode(frame))
            container.mux(sound.encode())


# Size fields to break: (marker, offset of the size relative to the marker, kind).
_MP4_BOXES = [b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"minf", b"stbl", b"stsd", b"stsz", b"stco",
              b"stts", b"stss", b"avcC", b"mdat", b"esds", b"hdlr", b"edts", b"elst", b"udta", b"wave"]
_EBML_IDS = [bytes.fromhex(h) for h in ("1a45dfa3", "18538067", "1654ae6b", "ae", "1f43b675", "a3", "e0", "e1",
                                        "63a2", "86", "114d9b74", "1549a966", "1c53bb6b", "a0", "a1")]
_RIFF_CHUNKS = [b"RIFF", b"LIST", b"strh", b"strf", b"movi", b"idx1", b"00dc", b"01wb", b"avih"]


def _break_size(data: bytearray, rng: random.Random) -> str:
    """Overwrite the size field of a container element with a wrong value; falls back to a flip."""
    candidates: list[tuple[int, str]] = []
    for box in _MP4_BOXES:
        at = data.find(box)
        while at >= 4:
            candidates.append((at - 4, "mp4"))
            at = data.find(box, at + 1)
    for ident in _EBML_IDS:
        at = data.find(ident)
        while at >= 0 and at + len(ident) < len(data):
            candidates.append((at + len(ident), "ebml"))
            at = data.find(ident, at + 1)
            if len(candidates) > 4000:
                break
    for chunk in _RIFF_CHUNKS:
        at = data.find(chunk)
        while 0 <= at and at + 8 <= len(data):
            candidates.append((at + 4, "riff"))
            at = data.find(chunk, at + 1)
    if data[:1] == b"\x47":  # MPEG-TS: PES packet length / section length after a payload start
        for at in range(0, len(data) - 188, 188):
            candidates.append((at + 4 + 4, "ts"))
    if not candidates:
        _flip(data, rng)
        return "flip"
    offset, kind = rng.choice(candidates)
    if kind == "ebml":
        length = 1 + rng.randrange(8)
        value = rng.choice([b"\x01" + b"\xff" * 7, b"\x80", b"\xff", bytes([rng.randrange(256)])])[:length]
        data[offset : offset + len(value)] = value
    elif kind == "ts":
        data[offset : offset + 2] = bytes([rng.randrange(256), rng.randrange(256)])
    else:
        value = rng.choice([0, 1, 7, 8, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32), len(data) * 2])
        width = 4
        data[offset : offset + width] = value.to_bytes(width, "little" if kind == "riff" else "big")
    return f"size_field:{kind}"


def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 24)):
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)


def _span(data: bytearray, rng: random.Random) -> tuple[int, int]:
    length = rng.randint(1, max(1, min(len(data) // 4, rng.choice([4, 64, 512, 4096]))))
    start = rng.randrange(max(1, len(data) - length))
    return start, start + length


def mutate(original: bytes, rng: random.Random, kind: str) -> tuple[bytes, str]:
    """A damaged copy of `original` and a short description of what was done."""
    data = bytearray(original)
    if not data:  # a first mutation truncated it to nothing: nothing more to damage
        return original, "empty"
    if kind == "flip":
        _flip(data, rng)
    elif kind == "truncate":
        cut = rng.choice([rng.randrange(len(data)), rng.randrange(len(data) // 2, len(data)), rng.randrange(64)])
        del data[cut:]
        kind = f"truncate@{cut}"
    elif kind == "duplicate":
        start, end = _span(data, rng)
        at = rng.randrange(len(data))
        data[at:at] = data[start:end]
    elif kind == "swap":
        a0, a1 = _span(data, rng)
        b0, b1 = _span(data, rng)
        if a0 > b0:
            (a0, a1), (b0, b1) = (b0, b1), (a0, a1)
        if a1 <= b0:
            data = data[:a0] + data[b0:b1] + data[a1:b0] + data[a0:a1] + data[b1:]
        else:
            _flip(data, rng)
    elif kind == "zero":
        start, end = _span(data, rng)
        data[start:end] = bytes(end - start)
    else:
        kind = _break_size(data, rng)
    return bytes(data), kind


@dataclasses.dataclass
class Outcome:
    case: int
    seed_file: str
    mutation: str
    command: str
    result: str  # ok | clean_error | fault
    fault: str = ""
    detail: str = ""


def classify(command: str, process: subprocess.CompletedProcess[str] | None, out_dir: Path,
             output: Path | None) -> tuple[str, str, str]:
    """(result, fault kind, detail) of one finished (or timed-out: None) run."""
    if process is None:
        return "fault", "timeout", ""
    err = process.stderr
    last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
    left = sorted(p.name for p in out_dir.iterdir())
    expected_left = [output.name] if output is not None and process.returncode == 0 else []
    if process.returncode < 0:
        return "fault", f"signal {-process.returncode}", last
    if "Traceback" in err:
        return "fault", "traceback", last
    if "internal error" in err:
        return "fault", "internal_error", last
    if left != expected_left:
        return "fault", "left_behind", ", ".join(left)
    if process.returncode == 0:
        if output is not None:
            try:
                with av.open(str(output)) as container:
                    next(container.decode(video=0))
            except Exception as exc:  # noqa: BLE001 - any failure to read back is the fault
                return "fault", "unreadable_output", f"{type(exc).__name__}: {exc}"
        return "ok", "", ""
    if process.returncode in (1, 2) and last.startswith("v2v: error:"):
        return "clean_error", "", last
    return "fault", f"exit {process.returncode}", last


def run_case(case: int, seed: int, seeds: dict[str, bytes], work: Path, timeout: float,
             keep: Path | None = None) -> list[Outcome]:
    """Make case `case` of the run seeded `seed` and run probe and transcode on it."""
    rng = random.Random(f"{seed}:{case}")
    name = sorted(seeds)[case % len(seeds)]
    kind = MUTATIONS[(case // len(seeds)) % len(MUTATIONS)]
    data, description = mutate(seeds[name], rng, kind)
    if case % 3 == 2:  # every third case is damaged twice: a broken header and damage further on
        data, more = mutate(data, rng, rng.choice(MUTATIONS))
        description = f"{description}+{more}"
    folder = work / f"case{case}"
    folder.mkdir()
    source = folder / f"in{SEEDS[name][0]}"
    source.write_bytes(data)
    out_dir = folder / "out"
    out_dir.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    outcomes = []
    output = out_dir / "out.mp4"
    commands = {
        "probe": ["probe", str(source)],
        "transcode": ["transcode", str(source), "-o", str(output), "--preset", "ultrafast", "--no-progress"],
    }
    for label, args in commands.items():
        try:
            process: subprocess.CompletedProcess[str] | None = subprocess.run(
                [sys.executable, "-m", "v2v", *args], capture_output=True, text=True, timeout=timeout, env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            process = None
        result, fault, detail = classify(label, process, out_dir, output if label == "transcode" else None)
        outcomes.append(Outcome(case, name, description, label, result, fault, detail))
        for leftover in out_dir.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    if keep is not None and any(o.result == "fault" for o in outcomes):
        shutil.copy(source, keep / f"case{case}{source.suffix}")
    shutil.rmtree(folder, ignore_errors=True)
    return outcomes


def build_seeds(folder: Path) -> dict[str, bytes]:
    seeds = {}
    for name, (suffix, video, pix_fmt, audio, sample_format) in SEEDS.items():
        path = folder / f"{name}{suffix}"
        build_seed(path, video, pix_fmt, audio, sample_format)
        seeds[name] = path.read_bytes()
    return seeds


def fuzz(cases: int, seed: int, jobs: int = 2, timeout: float = 60.0, first: int = 0,
         keep: Path | None = None) -> tuple[dict, list[Outcome]]:
    """Run cases first..first+cases-1; returns (counts, faults). Faulting inputs are copied into `keep`."""
    with tempfile.TemporaryDirectory(prefix="v2v-fuzz-") as temp:
        work = Path(temp)
        seeds = build_seeds(work)
        outcomes: list[Outcome] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_case, case, seed, seeds, work, timeout, keep)
                       for case in range(first, first + cases)]
            for future in futures:
                outcomes.extend(future.result())
    faults = [o for o in outcomes if o.result == "fault"]
    counts = {
        "cases": cases,
        "seed": seed,
        "runs": len(outcomes),
        "ok": sum(o.result == "ok" for o in outcomes),
        "clean_errors": sum(o.result == "clean_error" for o in outcomes),
        "faults": dict(Counter(o.fault for o in faults)),
        "fault_count": len(faults),
        "by_mutation": dict(Counter(_first_kind(o.mutation) for o in outcomes if o.command == "probe")),
    }
    return counts, faults


def _first_kind(description: str) -> str:
    """The kind of a case's first mutation ("truncate@120+flip" -> "truncate")."""
    return description.split("+")[0].split("@")[0].split(":")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500, help="number of mutated files (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    parser.add_argument("--first", type=int, default=0, help="number of the first case (to rerun a slice)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a run may take (default 60)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="copy the inputs that fault here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    counts, faults = fuzz(args.cases, args.seed, args.jobs, args.timeout, args.first, args.keep)
    print(json.dumps(counts))
    for fault in faults:
        print(f"case {fault.case} {fault.seed_file} {fault.mutation} {fault.command}: {fault.fault}: {fault.detail}")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
