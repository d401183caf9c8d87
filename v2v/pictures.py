"""Pictures for people to look at: contact sheets (`v2v preview`) and plots of per-frame scores (`v2v compare
--plot`, `v2v metrics --plot`). Pillow and matplotlib are the optional extra `plot`; images are RGB uint8."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence

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


def contact_sheet(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], footer: Sequence[str],
                  height: int = 270) -> np.ndarray:
    """One row per (label, source, result): the label, then source | result scaled to `height` (at most the larger
    of the two's own), with the `footer` lines (command and settings) under all rows. RGB uint8 (H, W, 3)."""
    require("PIL", "plot")
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line = 14
    tall = min(height, max(max(s.shape[0], r.shape[0]) for _, s, r in rows)) if rows else height
    pictures = [(label, to_height(source, tall), to_height(result, tall)) for label, source, result in rows]
    width = max(520, *(PAD * 3 + s.shape[1] + r.shape[1] for _, s, r in pictures))
    wrapped = [part for text in footer for part in textwrap.wrap(text, max(20, (width - 2 * PAD) // 6)) or [""]]
    total = PAD + len(pictures) * (line + tall + PAD) + PAD + len(wrapped) * line + PAD
    sheet = Image.new("RGB", (width, total), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for label, source, result in pictures:
        draw.text((PAD, y), label, fill=TEXT, font=font)
        y += line
        sheet.paste(Image.fromarray(source), (PAD, y))
        sheet.paste(Image.fromarray(result), (PAD * 2 + source.shape[1], y))
        y += tall + PAD
    y += PAD
    for text in wrapped:
        draw.text((PAD, y), text, fill=TEXT, font=font)
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


def plot_series(path: str | os.PathLike[str], title: str, warping: Mapping[str, Sequence[float]],
                fidelity: Mapping[str, Sequence[float]] | None = None, fps: float | None = None,
                overwrite: bool = False) -> None:
    """A PNG with the warping error of each frame pair (one line per clip in `warping`) and, when given, PSNR
    (left axis) and SSIM (right axis) per frame (`fidelity` with keys "psnr" and "ssim"), over time."""
    from v2v.io.writer import check_output, temp_name

    target = os.fspath(path)
    check_output(target, overwrite)
    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    def times(count: int, offset: float) -> list[float]:
        return [(i + offset) / fps if fps else i + offset for i in range(count)]

    panels = 2 if fidelity and fidelity.get("psnr") else 1
    figure, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels), squeeze=False, sharex=True)
    top = axes[0][0]
    for name, values in warping.items():
        clean = [math.nan if v is None else v for v in values]
        top.plot(times(len(clean), 0.5), clean, label=name, linewidth=1.2)  # a pair sits between its frames
    top.set_ylabel("warping error")
    top.set_title(title)
    top.grid(alpha=0.3)
    if warping:
        top.legend(loc="upper right", fontsize=8)
    if panels == 2 and fidelity is not None:
        bottom = axes[1][0]
        psnr, ssim = fidelity["psnr"], fidelity.get("ssim", [])
        bottom.plot(times(len(psnr), 0), psnr, color="tab:blue", linewidth=1.2)
        bottom.set_ylabel("PSNR (dB)", color="tab:blue")
        bottom.grid(alpha=0.3)
        if ssim:
            twin = bottom.twinx()
            twin.plot(times(len(ssim), 0), ssim, color="tab:orange", linewidth=1.2)
            twin.set_ylabel("SSIM", color="tab:orange")
    axes[-1][0].set_xlabel("seconds" if fps else "frame")
    figure.tight_layout()
    partial = temp_name(target)
    try:
        figure.savefig(partial, format="png", dpi=100)
        os.replace(partial, target)
    except OSError as exc:
        raise OutputError(f"{target}: writing failed ({exc.strerror or exc})") from exc
    finally:
        plt.close(figure)
        if os.path.exists(partial):
            os.unlink(partial)
