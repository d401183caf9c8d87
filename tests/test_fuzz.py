"""Damaged inputs: a seeded 50-case slice of `scripts/fuzz_inputs.py` (the full run is 500 cases, see BENCHMARKS.md);
bad option values: a slice of `scripts/fuzz_options.py` with one run for each command.

Every `v2v probe` and `v2v transcode` on a mutated file must succeed or give one clean error line, in time, with
no traceback, no "internal error", no signal death and nothing left in the output folder.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_inputs.py"


def load_fuzzer():  # noqa: ANN201 - a module
    spec = importlib.util.spec_from_file_location("fuzz_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_inputs"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_mutations_are_deterministic_and_damage_the_file(tmp_path: Path) -> None:
    fuzz = load_fuzzer()
    seeds = fuzz.build_seeds(tmp_path)
    assert len(seeds) >= 6
    changed = 0
    for name, data in seeds.items():
        for kind in fuzz.MUTATIONS:
            first = fuzz.mutate(data, random.Random(f"1:{name}:{kind}"), kind)
            assert first == fuzz.mutate(data, random.Random(f"1:{name}:{kind}"), kind), (name, kind)
            changed += first[0] != data
    assert changed >= 0.9 * len(seeds) * len(fuzz.MUTATIONS)  # a size field may be rewritten to its own value


def test_fuzz_slice_has_no_faults() -> None:
    fuzz = load_fuzzer()
    counts, faults = fuzz.fuzz(cases=50, seed=0, jobs=2, timeout=60)
    assert not faults, "\n".join(f"{f.case} {f.seed_file} {f.mutation} {f.command}: {f.fault} {f.detail}"
                                 for f in faults)
    assert counts["runs"] == 100 and counts["ok"] + counts["clean_errors"] == 100
    assert counts["ok"] > 0 and counts["clean_errors"] > 0  # the slice both survives damage and refuses it
    assert set(counts["by_mutation"]) >= {"flip", "truncate", "duplicate", "swap", "zero", "size_field"}


def test_option_fuzz_slice_has_no_internal_errors() -> None:
    """A seeded slice of `scripts/fuzz_options.py`, one run for each command (the full run is 500, see
    BENCHMARKS.md): random values for the numeric options of every command give a result or one clean error line,
    never an internal error.

    The script runs in a fresh interpreter: it forks one run a child, and forking this test process, whose
    earlier tests left torch, Ray and decode threads behind, can deadlock a child (seen: a 120 s timeout)."""
    script = SCRIPT.parent / "fuzz_options.py"
    done = subprocess.run([sys.executable, str(script), "--runs", "0", "--seed", "0"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = json.loads(done.stdout.splitlines()[0])
    assert counts["runs"] == counts["commands"] >= 15 and counts["internal_errors"] == 0 and counts["faults"] == 0
    assert len(counts["by_command"]) == counts["commands"]  # every command was reached
    tally = counts["by_command"].values()
    assert sum(c.get("ok", 0) for c in tally) > 0 and sum(c.get("refused", 0) for c in tally) > 0
