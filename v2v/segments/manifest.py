"""The work folder: finished segment files and the manifest that records them (the input's fingerprint, the
options, each segment's state), replaced atomically after every change so that a crash loses at most the
segments in flight."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from v2v.errors import InputError, OutputError
from v2v.resume import check_same_run, fingerprint
from v2v.segments.plan import Plan, Segment

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class WorkFolder:
    """The folder of finished segments and their manifest (JSON, replaced atomically on every change)."""

    def __init__(self, folder: str | os.PathLike[str], suffix: str) -> None:
        self.folder = Path(folder)
        self.suffix = suffix

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def segment_path(self, number: int) -> Path:
        return self.folder / f"segment_{number:05d}{self.suffix}"

    def load(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
            if manifest.get("v2v_manifest") != MANIFEST_VERSION or not isinstance(manifest.get("segments"), list):
                raise ValueError("not a v2v manifest of this version")
            return manifest
        except (OSError, ValueError) as exc:
            raise InputError(
                f"work folder {self.folder} has a damaged manifest ({exc}); remove the folder to start over"
            ) from exc

    def save(self, manifest: dict[str, Any]) -> None:
        temporary = self.manifest_path.with_suffix(".json.partial")
        temporary.write_text(json.dumps(manifest, indent=1))
        os.replace(temporary, self.manifest_path)


def default_work_dir(output: str) -> str:
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.v2v-work")


def start_or_resume(work: WorkFolder, plan: Plan, options: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The manifest to work from: a new one, or the existing one after checking it belongs to this run."""
    source = fingerprint(plan.source)
    segments = [{"number": s.number, "first": s.first, "end": s.end, "state": "pending"} for s in plan.segments]
    fresh = {"v2v_manifest": MANIFEST_VERSION, "input": source, "options": options, "segments": segments}
    if not work.manifest_path.exists():
        if work.folder.exists() and any(work.folder.iterdir()):
            raise OutputError(
                f"work folder {work.folder} is not empty and has no manifest; remove it or choose another"
            )
        work.folder.mkdir(parents=True, exist_ok=True)
        work.save(fresh)
        return fresh
    if not resume:
        raise OutputError.naming(
            "work folder {folder} exists from an earlier run; pass {resume} to continue it, or remove it",
            folder=work.folder,
        )
    manifest = work.load()
    check_same_run(work.folder, manifest, source, options)
    planned = [(s["first"], s["end"]) for s in segments]
    if [(s["first"], s["end"]) for s in manifest["segments"]] != planned:
        raise InputError(f"work folder {work.folder} was cut differently; remove it to start over")
    return manifest


def is_done(work: WorkFolder, entry: dict[str, Any], segment: Segment) -> bool:
    """Done in the manifest and its file is there (a segment whose file went missing is redone)."""
    return entry.get("state") == "done" and work.segment_path(segment.number).exists()
