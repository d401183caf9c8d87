"""Hugging Face hub ids on disk: the cached snapshot, or a download as diffusers' `from_pretrained` makes one.

`models.resolve_path` is the one caller: it asks `cached` first (no network), then `download` unless the hub is
off (`--offline`, which calls `go_offline`, or `HF_HUB_OFFLINE=1`). A download fetches only what a loader reads
(`wanted_files`: configs, tokenizers and one copy of each weight file, safetensors before .bin, no fp16 variants,
no single-file checkpoints beside a diffusers pipeline), logs its size first and shows huggingface_hub's progress
bar; huggingface_hub resumes a file whose connection breaks (a Range request from the last 10 MiB chunk it wrote),
and the files already fetched stay in the cache for the next run. The endpoint is huggingface_hub's (`HF_ENDPOINT`).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".onnx_data", ".gguf")
# configs, tokenizers (vocab.json, merges.txt, spiece.model, tokenizer.json) and chat templates
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".jinja")
CONFIGS = tuple(f"*{suffix}" for suffix in CONFIG_SUFFIXES)  # `files` for a folder whose configs alone are needed
UNUSED_FOLDERS = ("safety_checker",)  # pipelines load with safety_checker=None
_SHARD = re.compile(r"-\d+-of-\d+$")


def is_offline() -> bool:
    """Whether hub requests are off for this process (`HF_HUB_OFFLINE=1`, or `--offline`)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def go_offline() -> None:
    """`--offline`: no hub requests from this process, nor from those it starts (Ray's workers), as with
    `HF_HUB_OFFLINE=1`."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def wanted_files(listing: Iterable[str], inside: str = "", files: Sequence[str] | None = None) -> list[str]:
    """The files of a repo (`listing`) that loading `inside` reads: a file of the repo (just it), or a folder ("" for
    the whole repo) with the configs and one copy of each weight. `files` (globs relative to that folder, or to the
    named file's folder) picks instead, or besides the named file: `CONFIGS`, an IP-Adapter's image encoder."""
    listing = sorted(listing)
    named = inside in listing
    base = posixpath.dirname(inside) if named else inside.strip("/")
    if files is None:
        picked = [] if named else [name for name in listing if not base or name.startswith(base + "/")]
    else:
        patterns = [posixpath.normpath(posixpath.join(base, pattern)) for pattern in files]
        picked = [name for name in listing if any(fnmatch(name, pattern) for pattern in patterns)]
    loadable = _loadable(picked, base, pipeline=posixpath.join(base, "model_index.json") in listing)
    return [inside] + [name for name in loadable if name != inside] if named else loadable


def _loadable(names: list[str], base: str, pipeline: bool) -> list[str]:
    """`names` less what no loader reads: other files than configs and weights, and weights a folder has another
    copy of (.bin beside .safetensors, a `.fp16` variant beside the full one, other formats). In a diffusers
    pipeline (`pipeline`), also the single-file checkpoints at its top and the folders v2v never loads."""
    if pipeline:
        names = [name for name in names if posixpath.relpath(name, base or ".").split("/")[0] not in UNUSED_FOLDERS]
    kept = [name for name in names if name.endswith(CONFIG_SUFFIXES)]
    folders: dict[str, list[str]] = {}
    for name in names:
        if name.endswith(WEIGHT_SUFFIXES) and not (pipeline and posixpath.dirname(name) == base):
            folders.setdefault(posixpath.dirname(name), []).append(name)
    for weights in folders.values():
        weights = [w for w in weights if w.endswith(".safetensors")] or [w for w in weights if w.endswith(".bin")]
        plain = [w for w in weights if "." not in _SHARD.sub("", posixpath.basename(w).rsplit(".", 1)[0])]
        kept += plain or weights
    return sorted(kept)


def _patterns(names: list[str]) -> list[str]:
    """Exact file names as huggingface_hub's `allow_patterns` (fnmatch globs)."""
    return [glob.escape(name) for name in names]


def cached(repo: str, inside: str = "", files: Sequence[str] | None = None) -> Path | None:
    """The cached snapshot of `repo` when it holds `inside` and, where the cache keeps the repo's file list (it does
    after any snapshot download), every file `wanted_files` picks; None otherwise. No network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = None
    try:  # recent huggingface_hub caches the listing; without it (or for a copied cache) the folder alone says
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        try:
            patterns = _patterns(wanted_files([f.path for f in get_cached_repo_tree(repo)], inside, files))
        except CachedRepoTreeNotFoundError:
            pass
    except ImportError:
        pass
    try:  # with `patterns`, a snapshot missing any of them (a download cut short) raises
        snapshot = Path(snapshot_download(repo, local_files_only=True, allow_patterns=patterns))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return snapshot if (snapshot / inside).exists() else None


class MissingFiles(LookupError):
    """The repo on the hub has nothing `wanted_files` picks (e.g. the file named inside it is not there)."""


def download(repo: str, inside: str, files: Sequence[str] | None, what: str) -> Path:
    """Download what `wanted_files` picks of `repo` into the Hugging Face cache and return the snapshot folder.
    Logs the size first; huggingface_hub's errors (no network, no such repo, gated) pass through."""
    from huggingface_hub import HfApi, constants, snapshot_download

    info = HfApi().model_info(repo, files_metadata=True)
    sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    names = wanted_files(sizes, inside, files)
    if not names:
        raise MissingFiles(f"{repo} on the hub has no {inside or 'model files'}")
    log.warning("downloading %s: %d files, %s, from %s into %s", what, len(names), _size(sum(sizes[n] for n in names)),
                constants.ENDPOINT, constants.HF_HUB_CACHE)  # fmt: skip
    with _progress_bars():
        return Path(snapshot_download(repo, allow_patterns=_patterns(names)))


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


@contextlib.contextmanager
def _progress_bars() -> Iterator[None]:
    """huggingface_hub's progress bars on for a download (transformers' quiet loading turns them off), unless the
    user turned them off (`HF_HUB_DISABLE_PROGRESS_BARS=1`)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    if quiet and not constants.HF_HUB_DISABLE_PROGRESS_BARS:
        enable_progress_bars()
    try:
        yield
    finally:
        if quiet and not constants.HF_HUB_DISABLE_PROGRESS_BARS:
            disable_progress_bars()
