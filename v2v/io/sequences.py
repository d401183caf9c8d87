"""Image sequences by name: a folder of images, or the files a printf pattern names (`frames/%05d.png`).

What a path names and in which order; the sequences themselves are read by `v2v.io.reader.ImageSequenceReader`
and written by `v2v.io.writer.ImageSequenceWriter`.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

from v2v.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr", ".dpx", ".tga")
DEFAULT_SEQUENCE_FPS = Fraction(25)
# printf-style frame number in a path: %d, %5d, %05d
_PRINTF_NUMBER = re.compile(r"%0?(\d*)d")


def is_image_sequence(path: str | os.PathLike[str]) -> bool:
    """True for a printf pattern (`out/%05d.png`) or an existing folder."""
    text = os.fspath(path)
    return bool(_PRINTF_NUMBER.search(os.path.basename(text))) or os.path.isdir(text)


def sequence_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of an image sequence in frame order: a folder's images, or the files a pattern names."""
    text = os.fspath(path)
    if os.path.isdir(text):
        files = [p for p in Path(text).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        return sorted(files, key=_natural_key)
    folder, name = os.path.split(text)
    regex = re.compile(pattern_regex(name))
    folder_path = Path(folder or ".")
    if not folder_path.is_dir():
        return []
    numbered = []
    for entry in folder_path.iterdir():
        match = regex.fullmatch(entry.name)
        if match:
            numbered.append((int(match.group(1)), entry))
    return [entry for _, entry in sorted(numbered)]


def pattern_regex(name: str) -> str:
    """A regex for the file names a printf pattern such as `%05d.png` stands for (group 1: the number)."""
    match = _PRINTF_NUMBER.search(name)
    if match is None:
        raise UsageError(f"{name!r} has no frame-number field such as %05d")
    before, after = re.escape(name[: match.start()]), re.escape(name[match.end() :])
    return f"{before}(\\d+){after}"


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
