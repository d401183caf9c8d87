"""Pictures for people to look at: contact sheets (`v2v preview`) and plots of per-frame scores (`v2v compare
--plot`, `v2v metrics --plot`). Pillow and matplotlib are the optional extra `plot`; images are RGB uint8."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from v2v.errors import OutputError, require

PAD = 8
TEXT = (235, 235, 235)
BACKGROUND = (24, 24, 24)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB uint8 image scaled to width x height (FFmpeg's bicubic through PyAV; no extra needed)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="BICUBIC").to_ndarray()


def to_height(image: np.ndarray, height: int) -> np.ndarray:
    """Scaled to `height`, keeping the aspect ratio."""
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return resize(image, width, height)


def font(size: int | None = None) -> object:
    """Pillow's default font, at `size` pixels where Pillow can scale it (10.1+ with FreeType)."""
    from PIL import ImageFont

    if size is not None:
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, ImportError):
            pass
    return ImageFont.load_default()


def text_patch(text: str, size: int) -> np.ndarray:
    """`text`, about `size` pixels high, in light letters on a dark box: a label to lay over a video's frames."""
    require("PIL", "plot")
    from PIL import Image, ImageDraw

    face = font(size)
    left, top, right, bottom = face.getbbox(text)  # type: ignore[attr-defined]
    margin = max(2, size // 4)
    box = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin), BACKGROUND)
    ImageDraw.Draw(box).text((margin - left, margin - top), text, fill=TEXT, font=face)
    return np.asarray(box)


def put(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """`patch` pasted into `image` (in place) with its top left at (x, y), cut off at the image's edges."""
    height, width = image.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + patch.shape[1]), min(height, y + patch.shape[0])
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scaled to width x height by nearest neighbour: every pixel a copy of the one it falls in, nothing smoothed."""
    rows = np.arange(height) * image.shape[0] // height
    columns = np.arange(width) * image.shape[1] // width
    return image[rows[:, None], columns]


def detail_window(image: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """Top left (x, y) of the width x height window with the most detail (the largest sum of gradient magnitude)."""
    grey = image.astype(np.float64).mean(axis=2)
    gradient = np.zeros_like(grey)
    gradient[:, :-1] += np.abs(np.diff(grey, axis=1))
    gradient[:-1] += np.abs(np.diff(grey, axis=0))
    total = np.pad(gradient.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))  # summed-area table
    sums = total[height:, width:] - total[:-height, width:] - total[height:, :-width] + total[:-height, :-width]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y)


def one_to_one_crops(source: np.ndarray, result: np.ndarray, size: int
                     ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """The result's most detailed square region (`size` pixels a side, at most its height and width) at its own
    pixels, and the same region of the source scaled to the result's size by nearest neighbour: ((x, y, width,
    height) in the result, source crop, result crop)."""
    height, width = result.shape[:2]
    side = min(size, width, height)
    x, y = detail_window(result, side, side)
    blown_up = nearest(source, width, height)
    return (x, y, side, side), blown_up[y : y + side, x : x + side], result[y : y + side, x : x + side]


class SheetRow(NamedTuple):
    """One row of a contact sheet: its caption, source and result (scaled to the row's height), and pictures shown
    at their own pixels after them (1:1 crops)."""

    label: str
    source: np.ndarray
    result: np.ndarray
    actual: Sequence[np.ndarray] = ()


def contact_sheet(rows: Sequence[SheetRow | tuple[str, np.ndarray, np.ndarray]], footer: Sequence[str],
                  height: int = 270) -> np.ndarray:
    """One row per `SheetRow`: its label (wrapped), then source | result scaled to `height` (at most the larger of
    the two's own), then its pictures at their own pixels; the `footer` lines (command and settings) under all
    rows. RGB uint8 (H, W, 3)."""
    require("PIL", "plot")
    from PIL import Image, ImageDraw

    face = font()
    line = 14
    rows = [SheetRow(*row) for row in rows]
    tall = min(height, max(max(row.source.shape[0], row.result.shape[0]) for row in rows)) if rows else height
    panels = [[to_height(row.source, tall), to_height(row.result, tall), *row.actual] for row in rows]
    width = max(520, *(PAD * (len(row) + 1) + sum(p.shape[1] for p in row) for row in panels))
    columns = max(20, (width - 2 * PAD) // 6)
    labels = [textwrap.wrap(row.label, columns) or [""] for row in rows]
    wrapped = [part for text in footer for part in textwrap.wrap(text, columns) or [""]]
    total = PAD + sum(len(lines) * line + tall + PAD for lines in labels) + PAD + len(wrapped) * line + PAD
    sheet = Image.new("RGB", (width, total), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for lines, pictures in zip(labels, panels, strict=True):
        for text in lines:
            draw.text((PAD, y), text, fill=TEXT, font=face)
            y += line
        x = PAD
        for picture in pictures:
            sheet.paste(Image.fromarray(np.ascontiguousarray(picture)), (x, y))
            x += picture.shape[1] + PAD
        y += tall + PAD
    y += PAD
    for text in wrapped:
        draw.text((PAD, y), text, fill=TEXT, font=face)
        y += line
    return np.asarray(sheet)


def save_png(image: np.ndarray, path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Write an RGB uint8 image as PNG atomically (a hidden temporary file renamed into place)."""
    from v2v.io.writer import check_output, temp_name

    target = os.fspath(path)
    check_output(target, overwrite)
    require("PIL", "plot")
    from PIL import Image

    partial = temp_name(target)
    try:
        Image.fromarray(image).save(partial, format="PNG")
        os.replace(partial, target)
    except OSError as exc:
        raise OutputError(f"{target}: writing failed ({exc.strerror or exc})") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


# One meaning per colour across a plot's panels: each clip keeps its colour, and the scores of B against A get
# colours no clip has.
CLIP_COLOURS = ("tab:blue", "tab:orange", "tab:red", "tab:brown")
PSNR_COLOUR, SSIM_COLOUR = "tab:green", "tab:purple"


def score_figure(title: str, warping: Mapping[str, Sequence[float]],
                 fidelity: Mapping[str, Sequence[float]] | None = None, fps: float | None = None) -> object:
    """The matplotlib figure `plot_series` saves: the warping error of each frame pair (one line per clip in
    `warping`) and, when given, PSNR (left axis, solid) and SSIM (right axis, dashed) per frame (`fidelity` with
    keys "psnr" and "ssim"), over time."""
    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    def times(count: int, offset: float) -> list[float]:
        return [(i + offset) / fps if fps else i + offset for i in range(count)]

    panels = 2 if fidelity and fidelity.get("psnr") else 1
    figure, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels), squeeze=False, sharex=True)
    top = axes[0][0]
    for k, (name, values) in enumerate(warping.items()):
        clean = [math.nan if v is None else v for v in values]
        top.plot(times(len(clean), 0.5), clean, label=name, linewidth=1.2,  # a pair sits between its frames
                 color=CLIP_COLOURS[k % len(CLIP_COLOURS)])
    top.set_ylabel("warping error")
    top.set_title(title)
    top.grid(alpha=0.3)
    if warping:
        top.legend(loc="upper right", fontsize=8)
    if panels == 2 and fidelity is not None:
        bottom = axes[1][0]
        psnr, ssim = fidelity["psnr"], fidelity.get("ssim", [])
        lines = bottom.plot(times(len(psnr), 0), psnr, color=PSNR_COLOUR, linewidth=1.2, label="PSNR")
        bottom.set_ylabel("PSNR (dB)", color=PSNR_COLOUR)
        bottom.grid(alpha=0.3)
        if ssim:
            twin = bottom.twinx()
            lines += twin.plot(times(len(ssim), 0), ssim, color=SSIM_COLOUR, linewidth=1.2, linestyle="--",
                               label="SSIM")
            twin.set_ylabel("SSIM", color=SSIM_COLOUR)
        bottom.legend(lines, [line.get_label() for line in lines], loc="lower right", fontsize=8)
    axes[-1][0].set_xlabel("seconds" if fps else "frame")
    figure.tight_layout()
    return figure


def plot_series(path: str | os.PathLike[str], title: str, warping: Mapping[str, Sequence[float]],
                fidelity: Mapping[str, Sequence[float]] | None = None, fps: float | None = None,
                overwrite: bool = False) -> None:
    """`score_figure` written as a PNG, atomically."""
    from v2v.io.writer import check_output, temp_name

    target = os.fspath(path)
    check_output(target, overwrite)
    figure = score_figure(title, warping, fidelity, fps)
    from matplotlib import pyplot as plt

    partial = temp_name(target)
    try:
        figure.savefig(partial, format="png", dpi=100)  # type: ignore[attr-defined]
        os.replace(partial, target)
    except OSError as exc:
        raise OutputError(f"{target}: writing failed ({exc.strerror or exc})") from exc
    finally:
        plt.close(figure)  # type: ignore[arg-type]
        if os.path.exists(partial):
            os.unlink(partial)
