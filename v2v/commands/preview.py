"""`v2v preview IN --frames N COMMAND [its options]`: a processing command's stages run on N frames spread over the
clip (found by seeking, not by decoding the whole clip), shown as a contact sheet PNG: source | result for each
picked frame, with the command and its settings printed under them. A restyle can be judged in seconds. When the
result's size differs (an upscale), each row also shows the same detailed region of both at the result's pixels, 1:1,
the source blown up by nearest neighbour, so the gain is seen rather than scaled away.

Any command whose module has `build_stages(args) -> list[Stage]` can be previewed; its `main` runs the same stages
over the whole clip. `args.partial` is True here: the stages see short runs of frames, not the whole clip.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from v2v.commands.common import positive_int

if TYPE_CHECKING:
    from v2v.io.source_frames import SourceFrames

HELP = "run a command's stages on a few frames spread over a clip and show source | result in a PNG contact sheet"

log = logging.getLogger(__name__)

# Options that say where and how to write, not what the stages do: left out of the settings printed.
_NOT_SETTINGS = {"input", "output", "overwrite", "resume", "work_dir", "backend", "workers", "address", "no_progress",
                 "verbose", "handler", "partial", "codec", "crf", "preset", "pix_fmt", "segment_seconds", "overlap",
                 "start", "end", "max_frames"}


def previewable() -> dict[str, str]:
    """Command name -> module, for the commands that hand their stages to preview."""
    from v2v.cli import COMMANDS

    names = {}
    for name, module_name in COMMANDS.items():
        if name != "preview" and hasattr(importlib.import_module(module_name), "build_stages"):
            names[name] = module_name
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = previewable()
    parser.add_argument("input", help="video file, image folder, or pattern such as frames/%%05d.png")
    parser.add_argument("--frames", type=positive_int, default=6, metavar="N",
                        help="how many frames, spread evenly over the clip (default 6; a shorter clip gives all)")
    parser.add_argument("-o", "--output", default=None, metavar="SHEET.png",
                        help="the contact sheet (default: INPUT-NAME.COMMAND.preview.png in the current folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace the sheet if it exists")
    parser.add_argument("--height", type=positive_int, default=270, metavar="PX",
                        help="height of each picture on the sheet (default 270; never more than the frames' own)")
    parser.add_argument("--context", type=int, default=None, metavar="K",
                        help="frames before each picked one that the stages see first (default: what the stages "
                             "declare, at most 8; give it for a temporal stage that declares none, e.g. stabilize)")
    parser.add_argument("command", choices=sorted(commands), metavar="COMMAND",
                        help=f"the command to preview: {', '.join(sorted(commands))}")
    parser.add_argument("options", nargs=argparse.REMAINDER, metavar="...",
                        help="the command's own options, as you would give them to it (without INPUT and -o)")


def main(args: argparse.Namespace) -> int:
    from v2v.errors import InputError, UsageError
    from v2v.io.probe import probe
    from v2v.pictures import contact_sheet, save_png

    started = time.monotonic()
    # 1. The command's options, parsed by its own parser (INPUT and -o filled in), and its stages.
    module = importlib.import_module(previewable()[args.command])
    output = args.output or f"{_stem(args.input)}.{args.command}.preview.png"
    if not output.lower().endswith(".png"):
        raise UsageError(f"{output}: the contact sheet is a PNG; give a name ending in .png")
    from v2v.cli import OneLineParser

    inner_parser = OneLineParser(prog=f"v2v preview INPUT {args.command}")
    module.add_arguments(inner_parser)
    inner = inner_parser.parse_args([args.input, "-o", output, *args.options])
    inner.partial, inner.verbose, inner.no_progress = True, args.verbose, True
    from v2v.io.writer import check_output

    check_output(output, args.overwrite)  # before any model loads
    info = probe(args.input, count_frames=False)  # its frame count would be a packet scan `clip.times` repeats
    from v2v.io.source_frames import SourceFrames
    from v2v.pipeline import attach_source

    clip = SourceFrames(args.input, info.fps)  # as a run hands it, for stages that read ahead (stabilize)
    times = frame_times(clip)
    if not times:
        raise InputError(f"{args.input}: no frames with timestamps to pick from")
    stages = module.build_stages(inner)

    # 2. Pick frames spread over the clip, and run the stages on a short run of frames up to each.
    picks = spread(len(times), args.frames)
    if len(picks) < args.frames:
        log.warning("%s has %d frame(s): previewing all of them, not %d", args.input, len(picks), args.frames)
    before, after = _context(stages, args.context)
    attach_source(stages, clip)
    rows = []
    for pick in picks:
        result = run_around(args.input, stages, times, pick, before, after, info.fps)
        if result is None:
            log.warning("%s: frame %d could not be decoded; left out of the sheet", args.input, pick)
            continue
        source, processed, made = result
        label = (f"frame {pick} at {times[pick]:.2f} s: source {source.shape[1]}x{source.shape[0]} | "
                 f"{args.command} {processed.shape[1]}x{processed.shape[0]}")
        label += ", the frame made after it" if made else ""
        rows.append(sheet_row(label, source, processed, args.height))
    clip.close()
    if not rows:
        raise InputError(f"{args.input}: none of the picked frames could be decoded")

    # 3. The sheet, with the command and its settings under the pictures.
    settings = {k: v for k, v in sorted(vars(inner).items()) if k not in _NOT_SETTINGS and v is not None}
    fps = f"{float(info.fps):.3f}".rstrip("0").rstrip(".") if info.fps else "?"
    footer = [
        f"v2v {args.command} {shlex.quote(args.input)} {shlex.join(args.options)}".rstrip(),
        "settings: " + (", ".join(f"{k}={_show(v)}" for k, v in settings.items()) or "none"),
        f"source: {info.width}x{info.height} at {fps} fps, {len(times)} frames; "
        f"{len(rows)} frames shown, each after {before} frame(s) of context",
    ]
    save_png(contact_sheet(rows, footer, height=args.height), output, overwrite=args.overwrite)
    print(f"v2v: wrote {output}: {len(rows)} frames of {args.command} in {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    return 0


def sheet_row(label: str, source: Any, result: Any, height: int) -> Any:
    """A sheet row: source | result, and when their sizes differ, 1:1 crops of the result's most detailed region
    (at most `height` square) from both, said in the label."""
    from v2v.pictures import SheetRow, one_to_one_crops

    if source.shape == result.shape:
        return SheetRow(label, source, result)
    (x, y, width, tall), source_crop, result_crop = one_to_one_crops(source, result, height)
    label += (f"; then 1:1 crops of the result's {width}x{tall} at x={x}, y={y} (the most detailed region), "
              "source beside it blown up by nearest neighbour")
    return SheetRow(label, source, result, (source_crop, result_crop))


def _stem(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    return os.path.splitext(name)[0].replace("%", "") or "preview"


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _context(stages: Sequence[Any], wanted: int | None) -> tuple[int, int]:
    from v2v.pipeline import context_of

    declared = context_of(stages)
    if wanted is not None:
        return max(0, wanted), declared.after
    before = 8 if declared.before is None else min(declared.before, 8)
    return before, min(declared.after, 8)


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` frame indices evenly over [0, count), first and last included; all of them when count is smaller."""
    if count <= wanted:
        return list(range(count))
    if wanted == 1:
        return [count // 2]
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def frame_times(clip: SourceFrames) -> list[float]:
    """Seconds from the first frame to each frame of `clip`, in presentation order (video files: from the packets,
    so nothing is decoded)."""
    return [max(0.0, seconds) for seconds in clip.times]


def run_around(path: str, stages: Sequence[Any], times: list[float], pick: int, before: int, after: int,
               fps: Any) -> tuple[Any, Any, bool] | None:
    """(source image, result image, whether the stages made the result) of frame `pick`: the stages run on frames
    pick-before .. pick+after, read by seeking to the first; the result is the output frame nearest the picked frame's
    time, or, for stages that make frames (interpolation, which passes the picked frame through), the first frame
    made after it."""
    from v2v.io.reader import open_source
    from v2v.pipeline import apply_stages, is_one_to_one

    first, last = max(0, pick - before), min(len(times) - 1, pick + after)
    with open_source(path, start=times[first], max_frames=last - first + 1, fps=fps) as reader:
        frames = [dataclasses.replace(frame, index=first + k, source_index=first + k)
                  for k, frame in enumerate(reader)]
    target = next((frame for frame in frames if frame.index == pick), None)
    if target is None:
        return None
    outputs = list(apply_stages(iter(frames), stages))
    if not outputs:
        return None
    made = [f for f in outputs if f.source_index is None and f.time is not None and target.time is not None
            and f.time > target.time]
    if made and not is_one_to_one(stages):
        return target.image, min(made, key=lambda frame: frame.time).image, True  # type: ignore[arg-type,return-value]
    if target.time is None or any(frame.time is None for frame in outputs):
        chosen = next((f for f in outputs if f.source_index == pick), outputs[min(pick - first, len(outputs) - 1)])
    else:
        chosen = min(outputs, key=lambda frame: (abs(frame.time - target.time), frame.index))  # type: ignore[operator]
    return target.image, chosen.image, False
