"""Fuzz v2v's options: random values for every numeric option of every command, never an "internal error".

Reads the options off the CLI's own parser (`v2v.cli.build_parser`): an option is numeric when its type turns "2" into
a number (int, float, a Fraction, the `at_least` types) or, untyped, when its default or metavar is a number (`--sigma
S|auto`, `--flow-scale auto|0.25|...`). Run N takes the commands in turn (so a short slice still reaches every
command, however many options each has) and one or two of that command's numeric options, gives each a value from a
seeded mix (negative, zero, huge, nan, inf, fractions for whole numbers, words, empty), and calls `v2v.cli.main` in a
fork of this process on a 12-frame 64x48 clip with --max-frames 2, the output in a fresh folder. Commands need what
they always need: a guide (the clip), a mask (a PNG), a named model that is installed (upscale); restyle and edit get
a model path that does not exist, so they run up to their model check, which comes after the options are checked. A
run passes with exit 0, or 1/2 with a `v2v: error:` or argparse `error:` line; it fails with "internal error", a
traceback, an exception out of `main`, or a run past --timeout.

    python scripts/fuzz_options.py --runs 500 --seed 0 [--timeout 120]
    python scripts/fuzz_options.py --runs 0   # one run for each command (the test's slice)

Prints one JSON line (runs, internal_errors, faults, and per command runs/ok/refused/faults), then one line per
fault (command line, what went wrong, the stderr's last line).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import multiprocessing
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_inputs import SEEDS, build_seed  # noqa: E402 - beside this script

# What every value mix draws from; whole-number options also get fractions, fractional ones tiny values.
COMMON_VALUES = ["-1", "0", "1", "2", "3", "-100", "1000000", "1e9", "99999999999999999999", "nan", "inf", "-inf",
                 "-0", "abc", "", " 7", "1e3", "0x10", "2/3"]
WHOLE_VALUES = ["2.5", "-0.5", "1.0", "16", "17"]
REAL_VALUES = ["0.5", "1e-9", "1e308", "-1e-9", "0.999", "1.5"]
# Each command's own needs besides the option under test: {INPUT}, {OUT} (a video), {CLIP}, {MASK} are filled in.
REQUIRED = {
    "stabilize": ["--guide", "{CLIP}"],
    "metrics": ["--guide", "{CLIP}", "--flow", "dis"],
    "upscale": ["--model", "realesr-animevideov3-x2"],
    "restyle": ["--model", "{MISSING}", "--prompt", "fuzz"],
    "edit": ["--model", "{MISSING}", "--instruction", "fuzz"],
    "inpaint": ["--mask", "{MASK}"],
    "relight": ["--model", "{MISSING}", "--ic-light", "{MISSING}", "--prompt", "fuzz"],
    "mask": ["--mask", "{MASK}"],
    "annotate": ["--control", "canny"],
    "stylize": ["--flow", "dis"],
    "translate": ["--flow", "dis"],
    "compare": [],
    "preview": [],
}
SKIPPED = {"models", "probe"}  # no numeric options


def numeric_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of `parser` that take a number."""
    found = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.choices or action.help == argparse.SUPPRESS:
            continue
        if action.type not in (None, str):
            try:
                numeric = isinstance(action.type("2"), int | float | Fraction)
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                numeric = False
        else:
            numeric = isinstance(action.default, int | float) and not isinstance(action.default, bool) or any(
                character.isdigit() for character in str(action.metavar or "")) or "auto" in str(action.metavar)
        if numeric:
            found.append(action)
    return found


def commands() -> dict[str, tuple[argparse.ArgumentParser, list[argparse.Action]]]:
    """Each fuzzed command's parser and its numeric options."""
    from v2v.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    table = {}
    for name, parser in subparsers.choices.items():
        options = numeric_options(parser)
        if name not in SKIPPED and options:
            table[name] = (parser, options)
    return table


def whole(action: argparse.Action) -> bool:
    """Whether an option takes whole numbers (its type refuses 2.5)."""
    try:
        return action.type not in (None, str) and not isinstance(action.type("2.5"), float | Fraction)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True


def value_for(action: argparse.Action, rng: random.Random) -> str:
    pool = COMMON_VALUES + (WHOLE_VALUES if whole(action) else REAL_VALUES)
    if rng.random() < 0.3:  # a plain random number of either sign and size
        number = rng.choice([rng.randint(-5, 40), round(rng.uniform(-2, 100), 3), 10 ** rng.randint(3, 30)])
        return str(number)
    return rng.choice(pool)


def make_inputs(folder: Path) -> dict[str, str]:
    """The clip (12 frames, 64x48, 10 fps, AAC) and a mask PNG beside it."""
    clip = folder / "clip.mp4"
    build_seed(clip, *SEEDS["mp4-h264-aac"][1:])
    from PIL import Image

    mask = np.zeros((48, 64), np.uint8)
    mask[12:24, 20:36] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return {"CLIP": str(clip), "MASK": str(folder / "mask.png"), "MISSING": str(folder / "no-such-model")}


def arguments(name: str, parser: argparse.ArgumentParser, chosen: list[tuple[str, str]], inputs: dict[str, str],
              out: Path) -> list[str]:
    """The command line of one run."""
    flags = {flag for action in parser._actions for flag in action.option_strings}
    line = [name, inputs["CLIP"]]
    if name == "compare":
        line.append(inputs["CLIP"])
    if "-o" in flags:
        line += ["-o", str(out / ("sheet.png" if name == "preview" else "out.mp4"))]
    line += [part.format(**inputs) for part in REQUIRED.get(name, [])]
    given = {option for option, _ in chosen}
    if "--max-frames" in flags and "--max-frames" not in given:
        line += ["--max-frames", "2"]
    if "--no-progress" in flags:
        line.append("--no-progress")
    for option, value in chosen:
        line.append(f"{option}={value}")  # one token, so "-1" and "" are values, not flags
    if name == "preview":
        line.append("transcode")  # the command to preview, last: what follows it is that command's
    return line


def _call_main(line: list[str], sender: Any) -> None:
    """In the forked child: `v2v LINE`, its exit code, stderr and fault sent back."""
    from v2v.cli import main

    stderr, fault, code = io.StringIO(), "", None
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(line)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 2
    except BaseException as error:  # noqa: BLE001 - anything out of main is the fault being looked for
        fault = f"escaped {type(error).__name__}: {error}"
    sender.send((code, stderr.getvalue(), fault))
    sender.close()


def run_one(line: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(exit code, stderr, fault) of `v2v LINE`, called in a fork of this process: each run starts from the same
    state (v2v and torch imported once, here), and a crash is one run's fault, not the fuzzer's end."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_call_main, args=(line, sender))
    child.start()
    sender.close()
    code, text, fault = None, "", ""
    if receiver.poll(timeout):
        try:
            code, text, fault = receiver.recv()
        except EOFError:  # died before it could answer
            pass
    child.join(5 if code is not None or fault else 0)
    if child.is_alive():
        child.kill()
        child.join()
        fault = fault or "timeout"
    elif code is None and not fault:
        fault = f"died (exit {child.exitcode})"
    if not fault:
        if "internal error" in text:
            fault = "internal_error"
        elif "Traceback" in text:
            fault = "traceback"
        elif code not in (0, 1, 2) or (code and "error:" not in text):
            fault = f"exit {code}"
    return code, text, fault


def fuzz(runs: int, seed: int, timeout: float = 120.0) -> tuple[dict, list[tuple[str, str, str]]]:
    """`runs` seeded runs (0: one for each command); returns (counts, faults as (command line, fault, last stderr
    line))."""
    import v2v.cli  # noqa: F401 - imported once here, so each forked run starts warm
    for heavy in ("torch", "diffusers"):  # what most commands import: once, not once a run
        with contextlib.suppress(ImportError):
            importlib.import_module(heavy)
    rng = random.Random(seed)
    table = commands()
    names = sorted(table)
    runs = runs or len(names)
    tally: dict[str, Counter] = defaultdict(Counter)
    faults = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="v2v-fuzz-options-") as temp:
        inputs = make_inputs(Path(temp))
        for number in range(runs):
            name = names[number % len(names)]  # the commands in turn: a short slice reaches every one
            parser, options = table[name]
            action = rng.choice(options)
            chosen = [action] + ([rng.choice(options)] if rng.random() < 0.25 else [])
            values = [(option.option_strings[-1], value_for(option, rng)) for option in dict.fromkeys(chosen)]
            out = Path(temp) / f"run{number}"
            out.mkdir()
            line = arguments(name, parser, values, inputs, out)
            code, text, fault = run_one(line, timeout)
            tally[name]["runs"] += 1
            tally[name]["ok" if code == 0 and not fault else "fault" if fault else "refused"] += 1
            if fault:
                last = next((row for row in reversed(text.splitlines()) if row.strip()), "")
                faults.append((" ".join(line[:1] + line[2:]), fault, last))
    counts = {
        "runs": runs, "seed": seed, "internal_errors": sum(f[1] == "internal_error" for f in faults),
        "faults": len(faults), "seconds": round(time.perf_counter() - began, 1),
        "commands": len(names), "options": sum(len(options) for _, options in table.values()),
        "by_command": {name: dict(tally[name]) for name in sorted(tally)},
    }
    return counts, faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="number of runs (default 500; 0: one for each command)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the values (default 0)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take (default 120)")
    args = parser.parse_args()
    counts, faults = fuzz(args.runs, args.seed, args.timeout)
    print(json.dumps(counts))
    for line, fault, last in faults:
        print(f"v2v {line}: {fault}: {last}")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
