"""Upscale frames with an SRModel: border pre-padding, tiles blended without seams, batching, and the final size.

The steps for a batch of frames (float (B, 3, H, W) in [0, 1]):

1. Reflect-pad the border by `pre_pad` pixels (10, as Real-ESRGAN and its ncnn build do), so the edges of
   the picture are computed with context instead of the network's zero padding.
2. Run the network on the whole batch, or tile by tile: tiles overlap by `tile_pad` pixels of context and
   their outputs are cross-faded over `2 * blend` pixels at each interior edge, so no seam shows. With
   `tile_pad - blend` at least the network's receptive radius the result equals the untiled one.
3. Resize after the network: the model's own step (realesr-animevideov3-x2 is the x4 network then a bicubic
   resize by 0.5, done exactly like its ncnn graph), or the one `scale` asks for.
4. Crop the pre-padding, make the size even for the video codec, clamp to [0, 1].

Frames too large for memory are tiled automatically: the tile size comes from free memory (measured on
CUDA, counting what torch's allocator keeps cached; estimated on the CPU) and is chosen once per frame size, on
the first frame of that size, so a clip is never tiled differently from frame to frame. An out-of-memory error
halves the tile, tries again and keeps the smaller tile.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from v2v.errors import ModelError, ParameterError, UsageError
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.pipeline import batched

if TYPE_CHECKING:
    import torch

    from v2v.restore.int8 import Int8Network
    from v2v.restore.sr_models import SRModel

log = logging.getLogger(__name__)

MIN_TILE = 64


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def codec_size(height: int, width: int, even: bool = True) -> tuple[int, int]:
    """`(height, width)` made even (rounded down, at least 2) when `even`, as yuv420p video needs."""
    if not even:
        return height, width
    return max(2, height - height % 2), max(2, width - width % 2)


class Upscaler:
    """Run an SRModel over batches of frames: float (B, 3, H, W) in [0, 1] -> float (B, 3, H', W') in [0, 1].

    Args:
        model: the loaded model (see `v2v.restore.sr_models.load_model`).
        device: "cpu", "cuda", "cuda:1", ...; the model is moved there (None: `v2v.devices.resolve_device`).
        dtype: compute dtype ("auto", "fp32", "fp16", "bf16" or a torch dtype; see `ModelTraits.dtype`), or "int8"
            for quantized convolutions on the CPU (see `v2v.restore.int8`).
        tile: tile size in input pixels; None picks one from free memory (no tiling when the frame fits) once
            per frame size, on the first frame of that size, and keeps it; 0 never tiles.
        tile_pad: context pixels around each tile (inputs overlap by this much on each side).
        blend: half-width of the cross-fade between neighbouring tiles, in input pixels (< tile_pad).
        pre_pad: reflected border added before the network and cropped after it; None: the model's own
            (10, or 0 for networks that pad themselves, like Real-CUGAN).
        scale: overall output scale; None keeps the model's own. It may not exceed the network's scale
            (only resizing down after the network is done; anything more would be plain interpolation).
        even: make the output size even (video codecs with 4:2:0 chroma need it).
        calibration_frames: with int8, how many frames with detail calibrate it (they are run in float32).
    """

    def __init__(
        self,
        model: SRModel,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        tile: int | None = None,
        tile_pad: int = 32,
        blend: int = 8,
        pre_pad: int | None = None,
        scale: float | None = None,
        even: bool = True,
        calibration_frames: int = 2,
        compile: bool = False,
    ) -> None:
        import torch

        # 1. Check the options against the model.
        if scale is not None and math.isclose(scale, model.scale):
            scale = None  # the model's own scale: do exactly what its graph does
        if scale is not None and (not math.isfinite(scale) or scale < 1):
            raise ParameterError("scale", f"must be a number >= 1, got {scale}")
        if scale is not None and scale > model.net_scale + 1e-9:
            own = "" if math.isclose(model.scale, model.net_scale) else f", resized to x{model.scale:g} by default"
            raise ParameterError(
                "scale", f"must be from 1 to {model.net_scale} for {model.name} (its network upscales "
                f"x{model.net_scale}{own}; more would be plain interpolation after it), got {scale:g}"
            )
        if tile is not None and tile != 0 and tile < MIN_TILE:
            raise ParameterError("tile", f"must be 0 (no tiling) or at least {MIN_TILE}, got {tile}")
        pre_pad = model.pre_pad if pre_pad is None else pre_pad
        if not 0 <= blend < tile_pad or pre_pad < 0:
            raise UsageError(f"need 0 <= blend < tile_pad and pre_pad >= 0 (got {blend}, {tile_pad}, {pre_pad})")
        if tile and tile < 4 * blend + 2:
            raise ParameterError("tile", f"{tile} is too small for a blend of {blend} pixels")
        # 2. Place the model.
        from v2v.devices import resolve_device, tune_for_fixed_shapes

        self.device = resolve_device(device)
        tune_for_fixed_shapes(self.device)  # one frame (or tile) shape a clip
        self.model = model
        self.int8: Int8Network | None = None
        if dtype == "int8":
            if self.device.type != "cpu":
                raise UsageError.naming(
                    "{dtype} int8 is for the CPU (torch's quantized kernels); on CUDA use fp16 or bf16")
            self.dtype = torch.float32  # the layers int8 leaves float, and the calibration frames
            from v2v.restore.int8 import Int8Network

            self.int8 = self.network = Int8Network(model.descriptor.model, calibration_frames=calibration_frames)
        else:
            self.dtype = model.traits.dtype(self.device, dtype)
            from v2v.restore.dense_block import share_dense_block_buffers

            network = copy.deepcopy(model.descriptor.model)  # the SRModel stays as loaded, for others to share
            share_dense_block_buffers(network)  # RRDBNet: 12% faster per block on the CPU (see its module)
            # channels_last: oneDNN and cuDNN convolutions run faster on NHWC (measured ~1.35x on this CPU).
            self.network = network.to(self.device, self.dtype).to(memory_format=torch.channels_last).eval()
            if compile:  # torch.compile, in place: one graph per frame or tile shape (fixed for a clip)
                self.network.compile()
        self.requirements = model.descriptor.size_requirements
        self.tile, self.tile_pad, self.blend, self.pre_pad = tile, tile_pad, blend, pre_pad
        self.tiles: dict[tuple[int, int], int] = {}  # (padded height, width) -> tile chosen on its first frame
        self.scale = scale
        self.even = even
        log.info("upscaler: %s x%g on %s in %s", model.name, self.output_scale, self.device, self.dtype)

    @property
    def output_scale(self) -> float:
        return self.scale if self.scale is not None else self.model.scale

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) of the output for an input of (height, width)."""
        if self.scale is None and self.model.resize is not None:
            # The graph's own resize acts on the padded frame (floored, like ncnn), then the pad is cropped.
            pad = round(self.pre_pad * self.model.scale)
            net = self.model.net_scale
            size = (
                math.floor((height + 2 * self.pre_pad) * net * self.model.resize) - 2 * pad,
                math.floor((width + 2 * self.pre_pad) * net * self.model.resize) - 2 * pad,
            )
        else:
            size = (round(height * self.output_scale), round(width * self.output_scale))
        return codec_size(*size, even=self.even)

    # -- the network on one tensor ------------------------------------------------------------------

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The bare network on float (B, 3, h, w): pads to the model's size requirements, returns float32."""
        import torch
        import torch.nn.functional as F

        height, width = x.shape[-2:]
        multiple = max(1, self.requirements.multiple_of)
        minimum = self.requirements.minimum
        pad_h = max(minimum, -(-height // multiple) * multiple) - height
        pad_w = max(minimum, -(-width // multiple) * multiple) - width
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        out = self.network(x).float()
        net = self.model.net_scale
        return out[..., : height * net, : width * net]

    def _tiled(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """The network tile by tile on float (B, 3, H, W), cross-fading neighbouring tiles (see the module doc)."""
        import torch

        batch, _, height, width = x.shape
        net = self.model.net_scale
        out = torch.zeros(batch, 3, height * net, width * net, dtype=torch.float32, device=x.device)
        columns = _tiles(width, tile, self.tile_pad)
        for y0, y1, top, bottom in _tiles(height, tile, self.tile_pad):
            # the weights are made on the host (a few numbers), so finding where they are non-zero reads nothing back
            weight_y = _ramp(y0, y1, top, bottom, height, self.blend, net, "cpu")
            a0, a1 = _support(weight_y)  # only the part with non-zero weight is added (the outer context is dropped)
            weight_y = weight_y[a0:a1, None].to(x.device)
            for x0, x1, left, right in columns:
                piece = self._network(x[..., y0:y1, x0:x1])
                weight_x = _ramp(x0, x1, left, right, width, self.blend, net, "cpu")
                b0, b1 = _support(weight_x)
                weight = weight_y * weight_x[None, b0:b1].to(x.device)
                out[..., y0 * net + a0 : y0 * net + a1, x0 * net + b0 : x0 * net + b1] += (
                    piece[..., a0:a1, b0:b1] * weight
                )
        return out

    def _auto_tile(self, batch: int, height: int, width: int) -> int:
        """A tile size that fits in free memory, or 0 when the whole frame fits."""
        from v2v.devices import available_memory

        budget = available_memory(self.device) * (0.7 if self.device.type == "cuda" else 0.5)
        per_pixel = self._bytes_per_pixel() * batch
        if per_pixel * height * width <= budget:
            return 0
        side = int(math.sqrt(budget / per_pixel)) - 2 * self.tile_pad
        tile = max(MIN_TILE, side // 16 * 16)
        log.info("frame %dx%d does not fit in memory at once; tiling by %d", width, height, tile)
        return tile

    def _bytes_per_pixel(self) -> float:
        """Peak memory per input pixel: measured on CUDA with a small probe, estimated on the CPU."""
        import torch

        if self.device.type == "cuda":
            probe = torch.rand(1, 3, 64, 64, device=self.device)
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            with torch.inference_mode():
                self._network(probe)
            peak = torch.cuda.max_memory_allocated(self.device) - before
            return 1.5 * peak / (64 * 64)
        # A VGG/RRDB-like network keeps a few 64-channel maps at input size and at output size.
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return itemsize * 64 * (8 + 4 * self.model.net_scale**2)

    def _run_network(self, x: torch.Tensor) -> torch.Tensor:
        """The network over the padded batch, whole or tiled; halves the tile after an out-of-memory error."""
        import torch

        batch, _, height, width = x.shape
        tile = self._tile_for(batch, height, width)
        while True:
            try:
                if not tile or tile >= max(height, width):
                    return self._network(x)
                return self._tiled(x, tile)
            except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError (torch 2.4 has no torch.OOM)
                if not _is_out_of_memory(error):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                current = tile or max(height, width)
                smaller = max(MIN_TILE, current // 2)
                if current <= MIN_TILE:
                    raise ModelError.naming(
                        "out of memory upscaling {width}x{height} even with tiles of {tile} pixels; use a smaller "
                        "{batch_size}, the CPU, or a lighter model", width=width, height=height, tile=tile,
                    ) from error
                log.warning(
                    "out of memory with %s; retrying with --tile %d (kept for the rest of this frame size)",
                    f"tile {tile}" if tile else "the whole frame",
                    smaller,
                )
                tile = self.tiles[(height, width)] = smaller

    def _tile_for(self, batch: int, height: int, width: int) -> int:
        """The tile for frames of this (padded) size: `tile` if given, else chosen on the first batch of the size
        and kept, so a clip is never split differently from one frame to the next (tiled and untiled outputs of
        a deep network differ slightly, which would flicker); only running out of memory changes it."""
        if (height, width) not in self.tiles:
            self.tiles[(height, width)] = self.tile if self.tile is not None else self._auto_tile(batch, height, width)
        return self.tiles[(height, width)]

    # -- the whole step -------------------------------------------------------------------------------

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Upscale float (B, 3, H, W) in [0, 1] to float32 (B, 3, H', W') in [0, 1] (see `output_size`)."""
        import torch
        import torch.nn.functional as F

        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a float (B, 3, H, W) batch, got shape {tuple(batch.shape)}")
        height, width = batch.shape[-2:]
        with torch.inference_mode():
            # 1. Reflect-pad the border (replicate when the frame is too small to reflect).
            x = batch.to(self.device, torch.float32)
            pad = self.pre_pad
            if pad:
                mode = "reflect" if min(height, width) > pad else "replicate"
                x = F.pad(x, (pad, pad, pad, pad), mode=mode)
            # 2. The network, whole or tiled (int8: observed in float32 while it calibrates).
            if self.int8 is not None:
                self.int8.begin(batch)
            out = self._run_network(x)
            if self.int8 is not None:
                self.int8.end(batch)
            # 3. The resize after the network, then 4. crop the pre-padding and fit the codec size.
            target = self.output_size(height, width)
            if self.scale is None and self.model.resize is not None:
                size = (
                    math.floor(out.shape[-2] * self.model.resize),
                    math.floor(out.shape[-1] * self.model.resize),
                )
                out = F.interpolate(out, size=size, mode=self.model.resize_mode, align_corners=False)
                crop = round(pad * self.model.scale)
                out = out[..., crop : crop + target[0], crop : crop + target[1]]
            else:
                crop = pad * self.model.net_scale
                out = out[..., crop : crop + height * self.model.net_scale, crop : crop + width * self.model.net_scale]
                if self.scale is not None and self.scale != self.model.net_scale:
                    out = F.interpolate(out, size=target, mode="bicubic", align_corners=False, antialias=True)
                out = out[..., : target[0], : target[1]]
            return out.clamp_(0, 1)

    def upscale_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 (H, W, 3) arrays of one size -> upscaled RGB uint8 arrays."""
        return tensor_to_images(self(images_to_tensor(images, self.device)))


def _tiles(length: int, tile: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis as (window start, window stop, core start, core stop): ceil(length / tile) cores
    covering [0, length), each inside a window with at least `pad` pixels of context on its interior sides.

    Every window has the same size, so the convolution backends (oneDNN, cuDNN) build their kernels once:
    tiles of many shapes made oneDNN re-create its primitives for every tile (50x slower for RRDBNet).
    Edge tiles need context on their inner side only, so their cores are longer than interior ones: the
    windows overlap by 2 * pad and repeat 2 * pad * (count - 1) pixels, not 2 * pad * count.
    """
    count = max(1, -(-length // tile))
    size = -(-(length + 2 * pad * (count - 1)) // count)
    while count > 1 and size < length:
        starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
        overlaps = [a + size - b for a, b in zip(starts[:-1], starts[1:], strict=True)]
        if min(overlaps) < 2 * pad:  # rounding the starts cost a pixel
            size += 1
            continue
        cuts = [0] + [b + overlap // 2 for b, overlap in zip(starts[1:], overlaps, strict=True)] + [length]
        return [(start, start + size, cuts[i], cuts[i + 1]) for i, start in enumerate(starts)]
    return [(0, length, 0, length)]


def _ramp(
    start: int, stop: int, core_start: int, core_stop: int, length: int, blend: int, scale: int, device: object
) -> torch.Tensor:
    """Blend weights along one axis of a tile's output, float32 of length (stop - start) * scale.

    1 over the core, cross-fading linearly over [edge - blend, edge + blend) at interior edges, so the weights
    of two neighbouring tiles sum to exactly 1; 0 over the context beyond.
    """
    import torch

    position = torch.arange(start * scale, stop * scale, device=device, dtype=torch.float32) + 0.5
    weight = torch.ones_like(position)
    if blend == 0:
        inside = (position >= core_start * scale) & (position < core_stop * scale)
        return inside.float()
    width = 2 * blend * scale
    if core_start > 0:
        weight *= ((position - (core_start - blend) * scale) / width).clamp(0, 1)
    if core_stop < length:
        weight *= (((core_stop + blend) * scale - position) / width).clamp(0, 1)
    return weight


def _support(weight: torch.Tensor) -> tuple[int, int]:
    nonzero = (weight > 0).nonzero()
    return int(nonzero[0]), int(nonzero[-1]) + 1


class UpscaleStage:
    """A pipeline stage that upscales every frame (timing kept), `batch_size` frames at a time.

    `model` is an SRModel, a model name or a path; `device` and the other keyword arguments go to `Upscaler`.
    """

    def __init__(self, model: SRModel | str | os.PathLike[str], *, batch_size: int = 1,
                 device: str | torch.device | None = None, **options: object) -> None:
        from v2v.restore.sr_models import SRModel, load_model

        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        from v2v.devices import resolve_device

        device = resolve_device(device)  # before a slow model load
        scale = options.get("scale")
        # loaded on the CPU, moved by Upscaler; `scale` completes a name without one (realesr-animevideov3 -> -x2)
        loaded = model if isinstance(model, SRModel) else load_model(model, "cpu", scale)  # type: ignore[arg-type]
        self.upscaler = Upscaler(loaded, device=device, **options)  # type: ignore[arg-type]
        self.batch_size = batch_size

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for group in batched(frames, self.batch_size):
            # Frames of a batch must share a size; a size change starts a new batch.
            for same in _same_size_runs(group):
                images = self.upscaler.upscale_images([frame.image for frame in same])
                for frame, image in zip(same, images, strict=True):
                    yield frame.with_image(image)


def _same_size_runs(frames: list[Frame]) -> Iterator[list[Frame]]:
    run: list[Frame] = []
    for frame in frames:
        if run and frame.image.shape != run[0].image.shape:
            yield run
            run = []
        run.append(frame)
    if run:
        yield run
