"""Frames larger than the model: tiled diffusion, as MultiDiffusion and Mixture of Diffusers do it.

Above the family's working size (`Defaults.tile`, `--tile N`) the frame's latents are denoised in overlapping tiles,
and the tiles' predictions are blended at every step, so the scheduler steps the whole frame at once and no tile
drifts from its neighbours. The seam is the denoiser call: while a pipeline runs, the denoiser's `forward` (and the
ControlNet's) is replaced by `TiledForward`, which cuts every spatial input to a tile, calls the real `forward` once
per tile, and blends the outputs with a window that ramps linearly across each overlap (1 inside, towards 0 at a
tile's inner edge, never at the frame's edge). Every family gets it through that seam:

- grid families (UNets, SD3): spatial inputs are (B, C, H, W) tensors at any power-of-two scale of the latent grid
  (the latents, an 8x ControlNet condition, the ControlNet's residuals at 1/2, 1/4, ... of it); tiles start on
  multiples of the UNet's total downsampling so each level's cut is exact;
- packed families (FLUX): tokens are 2x2 latent patches in row-major order; token-aligned inputs ((B, N, C) states,
  the ControlNet's block samples) are cut by token, and the (N, 3) position ids are re-based so each tile sees the
  positions a frame of its own size has (the model meets the positions it was trained on).

A family whose pipeline puts other image tokens in the same sequence (FLUX.1 Kontext and Qwen-Image-Edit: the
source image's tokens) declares `tileable = False` and is not tiled.

The blend accumulates in a wider float than the model's (float64 for float32 models), so where every tile predicts
the same value the blend returns it exactly: with an identity-like denoiser, tiled equals untiled bit for bit.

The rest stays at full size: the scheduler's step, latent flow fusion (its callback sees the whole frame's latents)
and pixel flow fusion. The cross-frame attention bank keeps one set of slots per tile (`FrameBank.tile`), each
tile-sized, so a tile attends to the same tile of the anchor and previous frame, and the bank's cap is chosen for
tiles. The VAE is tiled too (`tile_vae`): diffusers' tiling with the same tile where the VAE has it, else v2v's own
decode in tiles through `TiledForward`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from v2v.errors import ParameterError

log = logging.getLogger(__name__)

Span = tuple[int, int]  # [start, stop) along one axis, in latent units
TEXT_INPUTS = ("encoder_hidden_states", "txt_ids", "pooled_projections")  # never cut, whatever their length
POSITION_IDS = "img_ids"  # packed families' (N, 3) image token positions (0, row, column), re-based per tile
# the tile being denoised now, (rows, columns) in latent units, for what a model keeps beside its inputs (`cut_to_tile`)
_CURRENT: contextvars.ContextVar[tuple[Span, Span] | None] = contextvars.ContextVar("v2v_tile", default=None)


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles over an (height, width) latent grid: `rows` x `columns` spans, row-major."""

    height: int
    width: int
    rows: tuple[Span, ...]
    columns: tuple[Span, ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.columns)

    def tiles(self) -> Iterator[tuple[Span, Span]]:
        for row in self.rows:
            for column in self.columns:
                yield row, column

    def window(self, row: Span, column: Span, scale: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (h, w) blend weights of the tile at `row`, `column` on the grid scaled by `scale`."""
        return (_ramp(self.rows, row, scale, device, dtype)[:, None]
                * _ramp(self.columns, column, scale, device, dtype)[None, :])  # fmt: skip


def _ramp(spans: Sequence[Span], span: Span, scale: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1 inside the span, falling linearly across its overlap with the span before and the one after (to about 0 at
    its own edge); at the frame's edges it stays 1."""
    start, stop = _scaled(span, scale)
    position = torch.arange(start, stop, device=device, dtype=dtype) + 0.5
    weight = torch.ones(stop - start, device=device, dtype=dtype)
    index = spans.index(span)
    if index > 0:
        shared = _scaled(spans[index - 1], scale)[1] - start
        if shared > 0:
            weight = torch.minimum(weight, (position - start) / shared)
    if index < len(spans) - 1:
        shared = stop - _scaled(spans[index + 1], scale)[0]
        if shared > 0:
            weight = torch.minimum(weight, (stop - position) / shared)
    return weight


def _scaled(span: Span, scale: float) -> Span:
    return math.floor(span[0] * scale), math.ceil(span[1] * scale)


def spans(size: int, tile: int, overlap: int, align: int) -> tuple[Span, ...]:
    """Spans of at most `tile` (the last may be up to `align` - 1 longer) covering `size`, neighbours sharing at
    least `overlap`, every start a multiple of `align`; one span when `size` fits in a tile."""
    if size <= tile:
        return ((0, size),)
    # counted with at least one `align` of overlap (when the tile has room), so that starts rounded down to `align`
    # leave no gap; a tile of one `align` leaves none either (its starts are whole tiles apart at most)
    stride = tile - (max(overlap, align) if tile >= 2 * align else overlap)
    count = 1 + math.ceil((size - tile) / stride)
    starts = sorted({(i * (size - tile) // (count - 1)) // align * align for i in range(count)})
    return tuple((start, size if start == starts[-1] else start + tile) for start in starts)


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int) -> TileGrid | None:
    """The tiles of an (height, width) latent grid (None when it fits in one tile)."""
    if height <= tile and width <= tile:
        return None
    return TileGrid(height, width, spans(height, tile, overlap, align), spans(width, tile, overlap, align))


def alignment(family: Any, denoiser: Any) -> int:
    """Latent units every tile starts on: a UNet's total downsampling (each level's cut is then exact), a packed
    family's patch."""
    if hasattr(denoiser, "down_blocks"):
        return 2 ** (len(denoiser.down_blocks) - 1)
    return int(getattr(family, "patch", 1)) if getattr(family, "packed_latents", False) else 1


def check_tile(tile: int, overlap: int, smallest: int, title: str) -> None:
    """ParameterError (one line) for a `tile` below the family's latent multiple `smallest` (pixels), or an overlap
    that leaves tiles nothing of their own."""
    if tile < smallest:
        raise ParameterError("tile", f"must be at least {smallest} pixels for {title} (tiles are whole multiples of "
                                     f"{smallest}, the model's latent multiple), got {tile}; 'off' turns tiling off")
    if not 0 <= overlap <= tile // 2:
        raise ParameterError("tile_overlap", f"must be from 0 to half the tile ({tile // 2}), got {overlap}")


class TiledForward:
    """A denoiser's (or ControlNet's, or VAE decoder's) `forward` run once per tile of `grid`, the outputs blended.

    `packed`: inputs are packed tokens (2x2 latent patches, `patch` latent pixels a side) rather than grids.
    `on_tile(number)` is told which tile runs (the cross-frame attention bank's slots), and `on_tile(0)` after.
    """

    def __init__(self, forward: Callable[..., Any], grid: TileGrid, *, packed: bool = False, patch: int = 1,
                 on_tile: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.forward, self.grid, self.packed, self.patch = forward, grid, packed, patch
        self.on_tile = on_tile or (lambda number: None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id of the output slot -> (weighted sum, weights)
        shape: Any = None
        try:
            for number, (row, column) in enumerate(self.grid.tiles()):
                self.on_tile(number)
                cut_args = [self._cut(value, row, column) for value in args]
                cut_kwargs = {name: self._cut(value, row, column, name) for name, value in kwargs.items()}
                current = _CURRENT.set((row, column))
                try:
                    out = self.forward(*cut_args, **cut_kwargs)
                finally:
                    _CURRENT.reset(current)
                shape = self._add(out, row, column, sums, [0])
        finally:
            self.on_tile(0)
        return self._finish(shape, sums, [0])

    # --- inputs

    def _tokens(self) -> tuple[int, int]:
        return self.grid.height // self.patch, self.grid.width // self.patch

    def _scale_of(self, value: torch.Tensor) -> float | None:
        """The scale of a (B, C, H, W) tensor's grid against the latent grid (8: pixels, 1/2: a UNet level), or
        None when it is not spatial."""
        if value.ndim != 4:
            return None
        for scale in (1, 8, 4, 2, 16, 0.5, 0.25, 0.125, 0.0625, 0.03125):
            if value.shape[-2:] == (math.ceil(self.grid.height * scale), math.ceil(self.grid.width * scale)):
                return scale
        return None

    def _token_dim(self, value: torch.Tensor, name: str) -> int | None:
        """The token dimension of a token-aligned tensor of a packed family ((B, N, C): 1; (N, 3) ids: 0)."""
        if name in TEXT_INPUTS:
            return None
        rows, columns = self._tokens()
        dim = {3: 1, 2: 0}.get(value.ndim)
        return dim if dim is not None and value.shape[dim] == rows * columns else None

    def _token_index(self, row: Span, column: Span, device: torch.device) -> torch.Tensor:
        rows, columns = self._tokens()
        p = self.patch
        ys = torch.arange(row[0] // p, -(-row[1] // p), device=device)
        xs = torch.arange(column[0] // p, -(-column[1] // p), device=device)
        return (ys[:, None] * columns + xs[None, :]).flatten()

    def _cut(self, value: Any, row: Span, column: Span, name: str = "") -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(self._cut(item, row, column, name) for item in value)
        if not isinstance(value, torch.Tensor):
            return value
        if self.packed:
            dim = self._token_dim(value, name)
            if dim is None:
                return value
            cut = value.index_select(dim, self._token_index(row, column, value.device))
            if name == POSITION_IDS:  # positions as a frame of the tile's size has them
                cut = cut.clone()
                cut[..., 1] -= row[0] // self.patch
                cut[..., 2] -= column[0] // self.patch
            return cut
        scale = self._scale_of(value)
        if scale is None:
            return value
        (top, bottom), (left, right) = _scaled(row, scale), _scaled(column, scale)
        return value[..., top:bottom, left:right]

    # --- outputs: every tensor blended into a canvas of the whole frame at its own scale

    def _add(self, out: Any, row: Span, column: Span, sums: dict, counter: list[int]) -> Any:
        """Add a tile's output to `sums`; returns the output's structure (tensors as None) to rebuild it."""
        if isinstance(out, dict):  # diffusers' BaseOutput
            return type(out), {key: self._add(value, row, column, sums, counter) for key, value in out.items()}
        if isinstance(out, (list, tuple)):
            return type(out), [self._add(item, row, column, sums, counter) for item in out]
        if not isinstance(out, torch.Tensor):
            return out
        slot = counter[0]
        counter[0] += 1
        wide = torch.float64 if out.dtype in (torch.float32, torch.float64) else torch.float32
        if self.packed:
            rows, columns = self._tokens()
            weight = self.grid.window(row, column, 1 / self.patch, out.device, wide).flatten()
            index = self._token_index(row, column, out.device)
            if slot not in sums:
                sums[slot] = (out.new_zeros((out.shape[0], rows * columns, out.shape[2]), dtype=wide),
                              out.new_zeros(rows * columns, dtype=wide))  # fmt: skip
            total, weights = sums[slot]
            total.index_add_(1, index, out.to(wide) * weight[None, :, None])
            weights.index_add_(0, index, weight)
            return out.dtype
        scale = _nearest_scale(out.shape[-2], row[1] - row[0])
        (top, bottom), (left, right) = _scaled(row, scale), _scaled(column, scale)
        if slot not in sums:
            height, width = math.ceil(self.grid.height * scale), math.ceil(self.grid.width * scale)
            sums[slot] = (out.new_zeros((*out.shape[:-2], height, width), dtype=wide),
                          out.new_zeros((height, width), dtype=wide))  # fmt: skip
        total, weights = sums[slot]
        weight = self.grid.window(row, column, scale, out.device, wide)
        total[..., top:bottom, left:right] += out.to(wide) * weight
        weights[top:bottom, left:right] += weight
        return out.dtype

    def _finish(self, shape: Any, sums: dict, counter: list[int]) -> Any:
        if isinstance(shape, torch.dtype):
            total, weights = sums[counter[0]]
            counter[0] += 1
            blended = total / (weights[None, :, None] if self.packed else weights)
            return blended.to(shape)
        if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[0], type):
            kind, parts = shape
            if isinstance(parts, dict):
                return kind(**{key: self._finish(value, sums, counter) for key, value in parts.items()})
            return kind(self._finish(value, sums, counter) for value in parts)
        return shape


def cut_to_tile(value: torch.Tensor) -> torch.Tensor:
    """A (B, C, h, w) tensor over the whole frame's latent grid, cut to the tile being denoised (itself outside a tiled
    call): for what a model keeps beside its inputs, as IC-Light's widened `conv_in` keeps the conditions' latents."""
    tile = _CURRENT.get()
    if tile is None:
        return value
    (top, bottom), (left, right) = tile
    return value[..., top:bottom, left:right]


def _nearest_scale(size: int, tile: int) -> float:
    """The power-of-two scale at which a tile `tile` latent units long comes out `size` long (ceil rounding)."""
    for scale in (1, 8, 4, 2, 16, 0.5, 0.25, 0.125, 0.0625, 0.03125):
        if math.ceil(tile * scale) == size:
            return scale
    raise ValueError(f"a tiled output of {size} for a tile of {tile} latent units is at no known scale")


@contextlib.contextmanager
def tiled_calls(modules: Sequence[Any], grid: TileGrid, *, packed: bool = False, patch: int = 1,
                on_tile: Callable[[int], None] | None = None) -> Iterator[None]:  # fmt: skip
    """Each module's `forward` runs per tile of `grid` for the block (hooks on the module still run once a call),
    then the module's own `forward` is back."""
    patched = []
    try:
        for module in modules:
            own = "forward" in vars(module)  # e.g. an offloading hook's forward
            patched.append((module, own, module.forward))
            module.forward = TiledForward(module.forward, grid, packed=packed, patch=patch, on_tile=on_tile)
        yield
    finally:
        for module, own, forward in reversed(patched):
            if own:
                module.forward = forward
            else:
                del module.forward


def tile_vae(vae: Any, tile: int, overlap: int) -> str:
    """Tile the VAE's encoding and decoding above `tile` pixels, neighbours sharing `overlap`: diffusers' tiling where
    the VAE has it (with this tile), else v2v's own tiled decode. Returns which, for the log."""
    if hasattr(vae, "use_tiling"):
        factor = 2 ** (len(getattr(vae.config, "block_out_channels", [0] * 4)) - 1)
        if hasattr(vae, "tile_sample_min_size"):  # AutoencoderKL (SD, SDXL, SD3, FLUX)
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // factor
            vae.tile_overlap_factor = overlap / tile
        for side in ("height", "width"):  # the video VAEs' (Qwen-Image's) names
            if hasattr(vae, f"tile_sample_min_{side}"):
                setattr(vae, f"tile_sample_min_{side}", tile)
                setattr(vae, f"tile_sample_stride_{side}", tile - overlap)
        vae.enable_tiling()
        return "diffusers' VAE tiling"
    vae.decode = TiledVAEDecode(vae.decode, tile, overlap)
    return "v2v's tiled VAE decode"


class TiledVAEDecode:
    """A VAE's `decode(z)` run in overlapping latent tiles (for VAEs without diffusers' tiling), blended like the
    denoiser's."""

    def __init__(self, decode: Callable[..., Any], tile: int, overlap: int, factor: int = 8) -> None:
        self.decode, self.tile, self.overlap, self.factor = decode, tile, overlap, factor

    def __call__(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        tile, overlap = self.tile // self.factor, self.overlap // self.factor
        grid = plan_tiles(z.shape[-2], z.shape[-1], tile, overlap, 1)
        if grid is None:
            return self.decode(z, *args, **kwargs)
        return TiledForward(self.decode, grid)(z, *args, **kwargs)


def describe(grid: TileGrid, factor: int) -> str:
    """The tile grid in pixels, for the log line."""
    heights = {(stop - start) * factor for start, stop in grid.rows}
    widths = {(stop - start) * factor for start, stop in grid.columns}
    return (f"{len(grid.rows)} x {len(grid.columns)} tiles of {'/'.join(map(str, sorted(widths)))}x"
            f"{'/'.join(map(str, sorted(heights)))} px")


def line_jumps(image: Any, axis: int) -> Any:
    """The mean absolute step between neighbouring lines of an (H, W, 3) image: across rows (`axis` 0, H - 1 values,
    the k-th between rows k and k + 1) or columns (`axis` 1)."""
    import numpy as np

    steps = np.abs(np.diff(np.asarray(image, np.float64), axis=axis))
    return steps.mean(axis=(1, 2) if axis == 0 else (0, 2))


def seam_excess(image: Any, source: Any, axis: int, borders: Sequence[int], reach: int = 3) -> tuple[float, float]:
    """How much the lines at tile borders stand out, for the seam test and `scripts/bench_tiles.py`.

    Each line's step (`line_jumps`, the step between pixel lines b - 1 and b at a border b) is divided by the mean step
    of the `reach` lines either side of it, in the image and in the source alike, and the image's ratio by the
    source's: how much more that line jumps than its neighbours do, beyond what the source does there. Returns the
    largest such excess at a border and the largest anywhere else (the noise level of that figure): a seam is a
    border whose excess stands above every other line's."""
    import numpy as np

    def ratios(picture: Any) -> Any:
        jumps = line_jumps(picture, axis)
        out = np.full(len(jumps), np.nan)
        for k in range(reach, len(jumps) - reach):
            around = np.r_[jumps[k - reach : k], jumps[k + 1 : k + 1 + reach]]
            out[k] = jumps[k] / max(around.mean(), 1e-6)
        return out

    excess = ratios(image) / np.maximum(ratios(source), 1e-6)
    at_border = {b - 1 for b in borders}  # the step into line b is jumps[b - 1]
    border = [excess[k] for k in at_border if 0 <= k < len(excess) and not np.isnan(excess[k])]
    other = [excess[k] for k in range(len(excess)) if k not in at_border and not np.isnan(excess[k])]
    return float(max(border, default=0.0)), float(max(other, default=0.0))


def borders(grid: TileGrid, factor: int) -> tuple[list[int], list[int]]:
    """The pixel rows and columns where a tile's region begins or ends inside the frame (seams would be there)."""
    def lines(spans_: Sequence[Span], size: int) -> list[int]:
        edges = {edge * factor for span in spans_ for edge in span}
        return sorted(edge for edge in edges if 0 < edge < size * factor)

    return lines(grid.rows, grid.height), lines(grid.columns, grid.width)
