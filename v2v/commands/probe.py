"""`v2v probe IN [--json]`: what a source holds, as text or JSON."""

from __future__ import annotations

import argparse
import json

HELP = "describe a video: streams, size, fps, duration, frame count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="video file, image folder, or pattern such as frames/%%05d.png")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(args: argparse.Namespace) -> int:
    from v2v.io.probe import probe

    info = probe(args.input)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    fps = f"{float(info.fps):.3f}".rstrip("0").rstrip(".") if info.fps else "unknown"
    if info.variable_frame_rate:
        fps += " (variable frame rate)"
    duration = f"{info.duration:.3f} s" if info.duration is not None else "unknown"
    frames = info.frame_count if info.frame_count is not None else "unknown"
    lines = [
        f"{info.path}  ({info.container})",
        f"  video: {info.codec} {info.width}x{info.height} {info.pix_fmt} ({info.bit_depth}-bit"
        f"{', alpha' if info.has_alpha else ''}{f', rotated {info.rotation}' if info.rotation else ''})",
        f"  fps: {fps}   duration: {duration}   frames: {frames}",
    ]
    lines += [f"  stream {s.index}: {s.kind} {s.codec} {s.details}".rstrip() for s in info.streams]
    print("\n".join(lines))
    return 0
