"""What makes a stopped run resumable: the same input and the same options as when its work was saved.

Segmented runs (`v2v.segments`) and image-sequence outputs (`v2v.io.writer.ImageSequenceWriter`) both keep finished
work beside the output; both check with `check_same_run` that a resume continues the run that saved it. This module
imports nothing of `v2v.io`, which uses it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from v2v.errors import InputError, UsageError


def fingerprint(path: str | os.PathLike[str], files: Sequence[Path] | None = None) -> dict[str, Any]:
    """The input's identity. A file: size plus a hash of its first and last MiB (cheap, and changes when the
    content does). An image sequence (give its `files`, as `v2v.io.sequences.sequence_files` lists them): their
    names and sizes."""
    path = os.fspath(path)
    digest = hashlib.sha256()
    if files is not None:
        for file in files:
            digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        size = sum(file.stat().st_size for file in files)
    else:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read(1 << 20))
    return {"path": os.path.abspath(path), "size": size, "sha256_head_tail": digest.hexdigest()}


def check_same_run(folder: str | os.PathLike[str], saved: dict[str, Any], source: dict[str, Any],
                   options: dict[str, Any]) -> None:
    """Refuse, in one line, to resume the work in `folder` (whose record is `saved`: "input" and "options") for
    another input or other options."""
    old = saved.get("input", {})
    if (old.get("size"), old.get("sha256_head_tail")) != (source["size"], source["sha256_head_tail"]):
        raise InputError(
            f"work folder {folder} belongs to another input ({old.get('path')}); "
            "remove it to start over"
        )
    if saved.get("options") != options:
        before = saved.get("options", {})
        changed = sorted(k for k in {*options, *before} if options.get(k) != before.get(k))
        details = ", ".join(f"{k}: {before.get(k)!r} -> {options.get(k)!r}" for k in changed)
        raise UsageError(f"can't resume: the options changed since the work folder was made ({details}); "
                         f"rerun with the same options or remove {folder}")
