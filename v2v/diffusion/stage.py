"""The diffusion stages: `RestyleStage` (img2img, held by ControlNets, styled by a prompt and/or an IP-Adapter
reference) and `EditStage` (instruction editing), over a stream of frames, kept steady in time.

Both are one `DiffusionStage`, which asks only the model's family (`registry.Family`) how to load, call and
hook the model; the temporal machinery below is the same for every family.

With `temporal` on, four things tie the frames together:

1. every frame starts from the same initial noise (the same seed for each frame);
2. cross-frame attention (`attention.py`, on the layers the family chooses): attention also reads the anchor
   and previous frame; the bank's memory is capped from the memory available (the cap is logged);
3. flow fusion (`v2v.consistency.TemporalFuser`): the previous output, warped by the source's flow, is
   blended in where it is visible;
4. latent flow fusion (`latent_fusion.py`, `latent_fusion` > 0): during the first steps, each frame's latents
   lean on the previous frame's latents at the same step, warped by the same source flow to the latent grid,
   where the flow is trusted; it runs in the pipeline's step callback (`callback_on_step_end`), with the
   family's own latent layout (`Family.unpack_latents`). Scene cuts restart it, and a batch's frames are tied
   one after the other as single frames would be.

With `keyframe_every` K > 1 only every K-th frame is diffused; the frames between get the look of the
keyframes on both sides by flow (`keyframes.py`), then the same fusion.

With `temporal` off each frame is the family's plain diffusers pipeline with its own seed (`seed + frame.index`),
the baseline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from v2v.diffusion.config import EditConfig, RestyleConfig
from v2v.diffusion.loras import load_loras, parse_loras
from v2v.errors import ModelError, UsageError, require
from v2v.frames import Frame, images_to_tensor, tensor_to_images
from v2v.pipeline import batched
from v2v.scenes import signature, signatures_cut

log = logging.getLogger(__name__)
OFFLOAD_SHARE = 0.8  # of the GPU's free memory the weights may take before the default offloads them


class DiffusionStage:
    """A pipeline stage (see `v2v.pipeline.Stage`) that diffuses frames as `config` says, with the model's family.

    Models load when the stage is made, on `config.device` (None, the default: `v2v.devices.resolve_device`'s choice),
    so a missing model fails before any frame is decoded. Frames may have any size: they are padded (edge pixels
    repeated) to the family's multiple, and cut back after.
    """

    one_to_one = True
    WARM_UP_FRAMES = 8  # context before each segment of a segmented run, when temporal is on

    @property
    def context(self) -> Any:
        """Temporal on: the attention anchor and fusion reach back without bound, so a segment warms up on a few
        frames and only approximates one pass (never segmented by default); so does keyframe mode, whose keyframes
        are counted from the segment's start. Off: each frame stands alone, unless a control map is rescaled per shot
        (`control.ShotNormalised`: its running range warms up on the same frames)."""
        from v2v.pipeline import Context

        inexact = self.config.temporal or self.config.keyframe_every > 1
        inexact |= any(getattr(make, "reaches_back", False) for make in self.controls)  # maps rescaled per shot
        return Context(before=self.WARM_UP_FRAMES, exact=False) if inexact else Context()

    def __init__(self, config: RestyleConfig) -> None:
        require("diffusers", "diffusion")
        from v2v.devices import parse_dtype, resolve_device
        from v2v.diffusion import control, models, registry
        from v2v.diffusion.attention import FrameBank

        # 1. The family, and the settings it fills in; its refusals come before anything big is loaded.
        self.family, info = registry.detect(config.check().model, config.model_config, config.kind)
        self.identity: Any = None  # InstantID's parts: its IdentityNet is one more ControlNet
        if config.identity:
            from v2v.diffusion.instantid import InstantID

            self.identity = InstantID(str(config.instantid), config.identity, str(config.face_encoder),
                                      config.identity_scale, self.family)
        self.kind = self.family.kind(config.kind, len(config.controlnets) + (self.identity is not None))
        self.config = config = config.with_defaults(self.family.defaults).check()
        self.device = resolve_device(config.device)
        self.dtype = parse_dtype(config.dtype) if config.dtype else self.family.dtype(self.device)
        if getattr(self.family, "video", False):
            raise UsageError(f"{self.family.title} is a video model: video_stage.VideoModelStage runs it")
        if config.window or config.window_overlap is not None or config.reference:
            raise UsageError.naming("{window}, {window_overlap} and {reference} are for video models; {title} "
                                    "diffuses frame by frame", title=self.family.title)  # fmt: skip
        if config.ip_adapter and self.family.ip_adapter is None:
            raise ModelError.naming("{title} models take no IP-Adapter; drop {ip_adapter}", title=self.family.title)
        if config.true_cfg is not None:
            _check_true_cfg(self.family, self.kind)
        # 2. ControlNets first: the cheaper error (a missing ControlNet) comes before the big load.
        names = config.controlnets + ([self.identity.controlnet_path] if self.identity is not None else [])
        controlnets = [self.family.load_controlnet(name, self.dtype, config.model) for name in names]
        # 3. The base pipeline (in CPU memory until `_place` says where it runs on CUDA), then what modifies it.
        self.pipe = self.family.load(
            info, self.kind, controlnets, model=config.model, device=self._load_device(), dtype=self.dtype,
            model_config=config.model_config,
        )  # fmt: skip
        for net, name in zip(controlnets, names, strict=True):
            self.family.check_controlnet(net, self.pipe, name, config.model)
        scheduler = config.scheduler or self.family.defaults.scheduler
        if scheduler:
            models.set_scheduler(self.pipe, scheduler)
        load_loras(self.pipe, self.family, parse_loras(config.lora), config.model)
        self.image_guidance: float | None = getattr(config, "image_guidance", None)
        self.guided = self.family.guided(self.pipe, float(config.guidance), self.image_guidance)
        self.guided |= config.true_cfg is not None  # two passes a step, each with its own bank slots
        self.ip_embeds: list[Any] | None = None
        if config.ip_adapter:
            reference = _read_reference(config.ip_adapter)
            self.family.load_ip_adapter(
                self.pipe, config.ip_adapter_model, config.image_encoder, config.ip_adapter_scale
            )
        if self.identity is not None:
            self.ip_embeds = self.identity.attach(self.pipe, self.guided)
        if config.attention_slicing:
            # slicing would replace the IP-Adapter's attention processors
            if config.ip_adapter or self.identity is not None:
                log.warning("attention slicing is not combined with an IP-Adapter; running without it")
            else:
                self.pipe.enable_attention_slicing()
        self.multiple = self.family.multiple(self.pipe)
        self.tiling = self._tiling()  # (tile, overlap, alignment) in latent units, or None: frames are never tiled
        if config.vae_tiling and self.tiling is None:
            self.pipe.vae.enable_tiling()
        self.offload = self._place(config.offload)
        if config.compile:
            self.family.denoiser(self.pipe).compile()  # in place: the pipeline still sees its own module
        if config.ip_adapter:  # on the device the pipeline runs on
            self.ip_embeds = self.family.ip_adapter_embeds(self.pipe, reference, self.device, self.guided)
        elif self.ip_embeds is not None:  # InstantID's, made while the pipeline was still in CPU memory
            self.ip_embeds = [embeds.to(self.device) for embeds in self.ip_embeds]
        # 4. Control maps, prompt checks, and the cross-frame attention bank.
        self.controls = [
            control.make_control(
                kind,
                device=self.device,
                dtype=self.dtype,
                depth_model=config.depth_model,
                pose_model=config.pose_model,
                norm=config.control_norm,
            )
            for kind in config.control_kinds
        ] + ([self.identity.keypoints] if self.identity is not None else [])
        self._warn_long_prompt(config.text, "instruction" if config.kind == "edit" else "prompt")
        if config.negative_prompt and not self.family.takes_negative_prompt and config.true_cfg is None:
            hint = " (or add --true-cfg S, e.g. 4: a second pass a step on it)"
            log.warning("%s is guidance-distilled and takes no negative prompt: --negative-prompt is ignored%s",
                        self.family.title, hint if self.kind in self.family.true_cfg_kinds else "")  # fmt: skip
        else:
            self._warn_long_prompt(config.negative_prompt, "negative prompt")
        self.bank = FrameBank(config.bank_tokens)
        self.latent_fusion: Any = None  # a latent_fusion.LatentFusion when on
        if config.temporal and config.latent_fusion > 0:
            from v2v.diffusion.latent_fusion import LatentFusion

            weight, share = config.latent_fusion, config.latent_fusion_steps
            self.latent_fusion = LatentFusion(self.family, weight, share, self.device, config.batch_size)
        self._bank_sized: tuple[int, int] | None = None  # the padded frame size the bank's cap was chosen for
        self._padding_told: set[tuple[int, int]] = set()
        self._tiles_told: set[tuple[int, int]] = set()

    def _tiling(self) -> tuple[int, int, int] | None:
        """(tile, overlap, alignment) in latent units for frames above the tile (`tiles.py`), the VAE tiled to match;
        None when tiling is off or the family is not tiled."""
        from v2v.diffusion import tiles

        config, defaults, title = self.config, self.family.defaults, self.family.title
        if config.tile == 0:
            return None
        if not self.family.tileable:
            if config.tile is not None:
                raise UsageError.naming("{title} frames are not tiled (the source image's tokens share the sequence): "
                                        "drop {tile}, or use {max_side}", title=title)  # fmt: skip
            return None
        tile = config.tile or defaults.tile
        overlap = config.tile_overlap
        if overlap is None:  # the family's share of its tile
            overlap = tile * defaults.tile_overlap // defaults.tile
        factor = int(getattr(self.pipe, "vae_scale_factor", 8))
        align = tiles.alignment(self.family, self.family.denoiser(self.pipe))
        tiles.check_tile(tile, overlap, align * factor, title)
        tile_latent = tile // (align * factor) * align  # whole multiples of the alignment
        overlap_latent = min(-(-overlap // factor), tile_latent // 2)
        self._vae_tiling = tiles.tile_vae(self.pipe.vae, tile_latent * factor, overlap_latent * factor)
        return tile_latent, overlap_latent, align

    def _tile_grid(self, height: int, width: int) -> Any:
        """The tiles of a padded frame of height x width pixels (`tiles.TileGrid`), or None when it fits in one;
        the grid is logged once per frame size."""
        from v2v.diffusion import tiles

        if self.tiling is None:
            return None
        factor = int(getattr(self.pipe, "vae_scale_factor", 8))
        grid = tiles.plan_tiles(height // factor, width // factor, *self.tiling)
        if grid is not None and (height, width) not in self._tiles_told:
            self._tiles_told.add((height, width))
            log.info("tiled diffusion: %dx%d frames in %s, neighbours sharing %d px, blended every step (%s); "
                     "--tile N|off sets the tile", width, height, tiles.describe(grid, factor),
                     self.tiling[1] * factor, self._vae_tiling)  # fmt: skip
        return grid

    def _tiled(self, grid: Any) -> contextlib.AbstractContextManager[Any]:
        """The denoiser and ControlNet run per tile of `grid` for the block (nothing when `grid` is None)."""
        if grid is None:
            return contextlib.nullcontext()
        from v2v.diffusion.tiles import tiled_calls

        modules = [self.family.denoiser(self.pipe)]
        if getattr(self.pipe, "controlnet", None) is not None:
            modules.append(self.pipe.controlnet)
        packed = bool(getattr(self.family, "packed_latents", False))
        return tiled_calls(modules, grid, packed=packed, patch=int(getattr(self.family, "patch", 1)),
                           on_tile=lambda number: setattr(self.bank, "tile", number))  # fmt: skip

    def _load_device(self) -> Any:
        """Where the weights load: the CPU when the device is CUDA (`_place` then moves or offloads them), else the
        device itself."""
        import torch

        return torch.device("cpu") if self.device.type == "cuda" else self.device

    def _place(self, offload: str | None) -> str:
        """Put the pipeline on its device, or offload it to CPU memory with diffusers' hooks that move each model
        (or layer) to the device while it runs; returns the offload used. Without a choice: none, or model when the
        weights do not fit the device's free memory, with a line saying so."""
        if self.device.type != "cuda":
            return "none"
        if offload is None:
            import torch

            weights = sum(parameter.numel() * parameter.element_size() for module in self.pipe.components.values()
                          if isinstance(module, torch.nn.Module) for parameter in module.parameters())  # fmt: skip
            free = torch.cuda.mem_get_info(self.device)[0]
            offload = "model" if weights > OFFLOAD_SHARE * free else "none"
            if offload == "model":
                log.warning("%s's weights (%.1f GB) do not fit in %.0f%% of the GPU's free memory (%.1f GB): "
                            "offloading each model to CPU memory between uses (--offload model; --offload none to "
                            "refuse)",
                            self.family.title, weights / 1e9, OFFLOAD_SHARE * 100, free / 1e9)  # fmt: skip
        if offload == "model":
            self.pipe.enable_model_cpu_offload(device=self.device)
        elif offload == "sequential":
            self.pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            self.pipe.to(self.device)
        return offload

    def _warn_long_prompt(self, prompt: str, what: str) -> None:
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if tokenizer is None or not prompt:
            return
        count = len(tokenizer(prompt).input_ids)
        if count > tokenizer.model_max_length:
            kept = tokenizer.batch_decode([tokenizer(prompt).input_ids[1 : tokenizer.model_max_length - 1]])[0]
            log.warning(
                "the %s is %d tokens; the text encoder reads %d, so it is cut after: %r",
                what,
                count,
                tokenizer.model_max_length,
                kept[-40:],
            )

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        self.bank.reset()
        if self.latent_fusion is not None:
            self.latent_fusion.reset()
        fuser = self._fuser()
        try:
            for frame, image in self._diffused(frames):
                yield frame.with_image(self._fuse(fuser, image, frame.image))
        finally:
            for made in self.controls:
                if hasattr(made, "close"):
                    made.close()

    def _diffused(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, np.ndarray]]:
        """(source frame, diffused image) in order: batches of diffused frames, or keyframes and the look
        carried between them by flow."""
        if self.config.keyframe_every > 1:
            from v2v.diffusion.keyframes import KeyframeWindow
            from v2v.flow import make_flow_estimator

            window = KeyframeWindow(
                self.config.keyframe_every,
                lambda frame: self.diffuse([frame.image], [frame.index])[0],
                make_flow_estimator("dis"),
                on_cut=self.bank.reset,  # a new scene gets its own anchor frame
            )
            yield from window.process(frames)
            return
        previous: Any = None  # the last frame's scene signature: each frame's is computed once
        for batch in batched(frames, self.config.batch_size):
            # the first frame of a new shot becomes the anchor of cross-frame attention
            cuts = []
            for frame in batch:
                current = signature(frame.image)
                cuts.append(previous is not None and signatures_cut(previous, current))
                previous = current
            images = self.diffuse([frame.image for frame in batch], [frame.index for frame in batch], cuts)
            yield from zip(batch, images, strict=True)

    def _fuser(self) -> Any:
        """The flow fuser of `v2v.consistency` when temporal is on with fusion, else None."""
        if not self.config.temporal or self.config.fusion <= 0:
            return None
        from v2v.consistency import FusionConfig, TemporalFuser

        # latent fusion's estimator remembers the flows it took: the same pairs, estimated once
        estimator = self.latent_fusion.estimator if self.latent_fusion is not None else None
        return TemporalFuser(FusionConfig(fusion=self.config.fusion), estimator, device=self.device)

    def _fuse(self, fuser: Any, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Blend in the previous output, warped by the source's flow, where it is visible (the fuser
        restarts by itself at scene cuts)."""
        return edited if fuser is None else fuser.fuse(edited, source)

    def _size_bank(self, height: int, width: int, grid: Any = None) -> None:
        """Cap the bank's tokens per frame so that it fits in its share of the memory available now, for
        frames of height x width (padded), tiled by `grid` (each tile keeps its own); say what was chosen.
        `--bank-tokens` overrides it."""
        from v2v.diffusion.attention import BANK_MEMORY_FRACTION, bank_budget, bank_bytes, bank_cap

        if self._bank_sized == (height, width) or not self.config.temporal:
            return
        self._bank_sized = (height, width)
        if grid is None:
            shapes = self.family.bank_shapes(self.pipe, height, width)
        else:
            factor = int(getattr(self.pipe, "vae_scale_factor", 8))
            shapes = [shape for row, column in grid.tiles() for shape in self.family.bank_shapes(
                self.pipe, (row[1] - row[0]) * factor, (column[1] - column[0]) * factor)]  # fmt: skip
        steps = self.family.denoising_steps(self.kind, int(self.config.steps), float(self.config.strength))
        groups = self.family.guidance_groups(self.guided)
        element = self.dtype.itemsize
        full = bank_bytes(shapes, steps, groups, element, None)
        if self.config.bank_tokens is not None:
            kept = bank_bytes(shapes, steps, groups, element, self.config.bank_tokens)
            log.info("cross-frame attention bank: at most %d tokens a frame (--bank-tokens), %.0f MB of %.0f MB",
                     self.config.bank_tokens, kept / 2**20, full / 2**20)  # fmt: skip
            return
        budget = bank_budget(self.device)
        self.bank.max_tokens = cap = bank_cap(shapes, steps, groups, element, budget)
        if cap is None:
            log.info("cross-frame attention bank: %.0f MB for %dx%d frames, within its budget of %.0f MB "
                     "(%.0f%% of the memory available)", full / 2**20, width, height, budget / 2**20,
                     BANK_MEMORY_FRACTION * 100)  # fmt: skip
        else:
            kept = bank_bytes(shapes, steps, groups, element, cap)
            log.warning("cross-frame attention bank: %.0f MB in full for %dx%d frames, over its budget of %.0f MB "
                        "(%.0f%% of the memory available); keeping at most %d tokens a frame per layer (%.0f MB); "
                        "set --bank-tokens to choose", full / 2**20, width, height, budget / 2**20,
                        BANK_MEMORY_FRACTION * 100, cap, kept / 2**20)  # fmt: skip

    def prepare_batch(self, batch: Any, indices: list[int], fit: Any) -> None:
        """A mode's own conditioning of one pipeline call over the frames at clip positions `indices`, before the
        call (relighting's foreground latents and its initial image). `fit` takes more RGB uint8 pictures of the
        frames' size to the pipeline's grid as the frames were taken (scaled, padded). The base stage adds nothing."""

    def diffuse(
        self,
        images: Sequence[np.ndarray],
        indices: Sequence[int],
        cuts: Sequence[bool] | None = None,
        masks: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Diffuse consecutive frames (RGB uint8 (H, W, 3), all one size) in one pipeline call.

        `masks` (inpaint kinds): one float (H, W) array per frame, 1 = repaint; scaled and padded like the frames.

        `indices` are the frames' positions in the clip (they seed the noise when temporal is off). With
        temporal on the frames must come in clip order across calls: the attention bank carries over, and
        a frame flagged in `cuts` (the first of a new shot) starts afresh as the anchor.
        """
        import torch
        import torch.nn.functional as F

        from v2v.diffusion.registry import Batch

        config = self.config
        # 1. Frames to a tensor whose sides the family accepts.
        frames = images_to_tensor(images, self.device, self.dtype)
        height, width = frames.shape[-2:]
        scaled = fit_to_side(frames, config.max_side)
        pad_h, pad_w = -scaled.shape[-2] % self.multiple, -scaled.shape[-1] % self.multiple
        if (pad_h or pad_w) and (height, width) not in self._padding_told:
            self._padding_told.add((height, width))
            log.warning("%dx%d frames are padded to %dx%d (%s takes sides that are multiples of %d) and cut back after",
                        scaled.shape[-1], scaled.shape[-2], scaled.shape[-1] + pad_w, scaled.shape[-2] + pad_h,
                        self.family.title, self.multiple)  # fmt: skip
        padded = _pad(scaled, pad_h, pad_w)
        count = padded.shape[0]
        grid = self._tile_grid(padded.shape[-2], padded.shape[-1])
        self._size_bank(padded.shape[-2], padded.shape[-1], grid)
        # 2. Control maps and the noise seeds.
        batch = Batch(
            kind=self.kind, images=padded, prompt=config.text, negative_prompt=config.negative_prompt,
            steps=int(config.steps), guidance=float(config.guidance), strength=float(config.strength),
            image_guidance=self.image_guidance, generators=[], ip_adapter_embeds=self.ip_embeds,
            true_cfg=config.true_cfg,
        )  # fmt: skip
        if masks is not None:
            stacked = torch.from_numpy(np.stack([np.asarray(mask, np.float32) for mask in masks]))[:, None]
            if stacked.shape[-2:] != scaled.shape[-2:]:
                stacked = F.interpolate(stacked, size=scaled.shape[-2:], mode="bilinear", align_corners=False)
            batch.masks = _pad((stacked >= 0.5).to(self.device, self.dtype), pad_h, pad_w)
        shots = list(cuts) if cuts is not None else None  # None: a map rescaled per shot finds the cuts itself
        cuts = shots or [False] * count
        if self.controls:
            batch.control_images = [
                make(padded, batch.masks) if getattr(make, "needs_mask", False)  # control.inpaint
                else _pad(control_map(make, scaled, list(indices), shots), pad_h, pad_w) for make in self.controls
            ]
            scales = config.control_scales * (len(config.controlnets) if len(config.control_scales) == 1 else 1)
            batch.control_scales = scales + ([self.identity.scale] if self.identity is not None else [])
            batch.control_modes = list(config.control_modes)
        def fit(pictures: Sequence[np.ndarray]) -> Any:
            return _pad(fit_to_side(images_to_tensor(pictures, self.device, self.dtype), config.max_side), pad_h, pad_w)

        self.prepare_batch(batch, list(indices), fit)
        seeds = [config.seed] * count if config.temporal else [config.seed + index for index in indices]
        batch.generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        step_callback: dict[str, Any] = {}
        if self.latent_fusion is not None:  # the previous frame's latents, warped by the source's flow, where trusted
            sizes = (tuple(scaled.shape[-2:]), tuple(padded.shape[-2:]))
            step_callback = self.latent_fusion.arguments(images, indices, cuts, *sizes)
        # 3. Denoise, with cross-frame attention when temporal is on.
        attention = (
            self.family.cross_frame_attention(self.pipe, self.bank) if config.temporal else contextlib.nullcontext()
        )
        try:
            with attention, self._tiled(grid), torch.inference_mode():
                self.bank.begin(cuts)
                result = self.pipe(**self.family.call_arguments(self.pipe, batch), **step_callback).images
            if self.latent_fusion is not None:
                self.latent_fusion.finish()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError "... can't allocate memory"
            if not isinstance(exc, torch.cuda.OutOfMemoryError) and "allocate" not in str(exc):
                raise
            raise ModelError.naming(
                "out of memory diffusing {count} frame(s) of {width}x{height} on {device}: use {batch_size} 1, "
                "{max_side} 768 (diffuse smaller, scale back), {vae_tiling} or {attention_slicing}",
                count=count, width=width, height=height, device=self.device,
            ) from exc
        # 4. Back to the frames' own size.
        result = result[..., : scaled.shape[-2], : scaled.shape[-1]]
        if result.shape[-2:] != (height, width):
            result = F.interpolate(result.float(), size=(height, width), mode="bicubic", align_corners=False)
        return tensor_to_images(result)


class RestyleStage(DiffusionStage):
    """`v2v restyle`: img2img with the model's family, held by ControlNets, styled by a prompt and/or an
    IP-Adapter reference."""

    def __init__(self, config: RestyleConfig) -> None:
        super().__init__(config)


class EditStage(DiffusionStage):
    """`v2v edit`: instruction editing (InstructPix2Pix, ...); the source frame is the image the editor sees."""

    def __init__(self, config: EditConfig) -> None:
        super().__init__(config)


def _check_true_cfg(family: Any, kind: str) -> None:
    """UsageError (one line) when `true_cfg` does not apply to the family's pipeline for `kind`."""
    if kind in family.true_cfg_kinds:
        return
    if family.takes_negative_prompt:
        raise UsageError.naming("{true_cfg} is for the guidance-distilled FLUX.1 and FLUX.1 Kontext; {title} models "
                                "already guide with the negative prompt at {guidance}: drop {true_cfg}",
                                title=family.title)  # fmt: skip
    pipeline = family.pipelines[kind]
    if kind.endswith("+controlnet"):
        raise UsageError.naming("{true_cfg} does not combine with a {title} ControlNet (diffusers' {pipeline} takes "
                                "no negative prompt): drop {true_cfg} or {controlnets}", title=family.title,
                                pipeline=pipeline)  # fmt: skip
    raise UsageError.naming("{title} models take no {true_cfg} (diffusers' {pipeline} takes no negative prompt)",
                            title=family.title, pipeline=pipeline)


def _pad(images: Any, pad_h: int, pad_w: int) -> Any:
    """(B, C, H, W) grown by `pad_h` rows and `pad_w` columns of repeated edge pixels."""
    import torch.nn.functional as F

    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images


def _read_reference(path: str) -> Any:
    """The IP-Adapter's reference image as an RGB PIL image."""
    from PIL import Image

    from v2v.errors import InputError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the IP-Adapter reference image {path}: {exc}") from exc


def quiet_loading() -> None:
    """Hide diffusers'/transformers' loading progress bars (the CLI has its own)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def control_map(make: Any, frames: Any, indices: list[int], cuts: list[bool] | None = None) -> Any:
    """The control map `make` (of `control.make_control`) gives (B, 3, H, W) frames scaled as the stage diffuses them
    (`fit_to_side`), before padding: what `v2v annotate` writes and what the ControlNet is given, padded. A maker that
    reaches back in the shot is told where shots start when `cuts` says (None: it finds them)."""
    from v2v.diffusion.control import ControlVideo

    if isinstance(make, ControlVideo):
        return make.maps(indices, frames)
    return make(frames, cuts) if cuts is not None and getattr(make, "reaches_back", False) else make(frames)


def fit_to_side(frames: Any, max_side: int | None) -> Any:
    """Scale (B, 3, H, W) frames down (antialiased) so the longer side is at most `max_side`."""
    import torch.nn.functional as F

    height, width = frames.shape[-2:]
    size = fitted_size(height, width, max_side)
    if size == (height, width):
        return frames
    return F.interpolate(frames.float(), size=size, mode="bicubic", antialias=True).clamp(0, 1).to(frames.dtype)


def fitted_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) frames of height x width are diffused at: the longer side at most `max_side`."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    factor = max_side / max(height, width)
    return max(8, round(height * factor)), max(8, round(width * factor))
