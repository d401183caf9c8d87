"""The one device, dtype and thread policy of v2v.

- Device: what the user names (`cpu`, `cuda`, `cuda:1`), else CUDA when torch sees one, else the CPU.
- Dtype: what the user names, else `default_dtype(device, ...)`: fp16 on CUDA (bf16 where the model can't take
  fp16), bf16 on CPUs with native bf16 arithmetic when the model allows it, else fp32.
- Threads: library code never changes torch's process-wide thread count. Decoding and encoding run in their
  own threads beside the stages and mostly wait on I/O and FFmpeg's own pools, so torch keeps all cores.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from v2v.errors import UsageError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
               "bf16": "bfloat16", "bfloat16": "bfloat16"}  # fmt: skip


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device (None: cuda when available, else cpu); UsageError for an unknown name or
    for CUDA when torch sees none."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        placed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if placed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError.naming("{device} {asked} was asked for, but torch sees no CUDA device; use {device} cpu",
                                asked=device)
    return placed


def tune_for_fixed_shapes(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per input shape and keep the fastest
    (`cudnn.benchmark`): for the restoration networks, whose frames or tiles keep one shape for a whole clip. A
    process-wide flag; the CPU is left alone."""
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def set_threads(count: int | None) -> None:
    """The one place a command sets torch's CPU threads (`--threads N`), only when asked; UsageError for a count
    no machine has (torch overflows on it)."""
    if not count:
        return
    if count > 4096:
        raise UsageError.naming("{threads} {count} is more threads than any machine has; give at most the number of "
                                "cores ({cores})", count=count, cores=os.cpu_count())
    import torch

    torch.set_num_threads(count)


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slow."""
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name (fp32/float32, fp16/float16, bf16/bfloat16) or itself."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {name!r}; use fp32, fp16 or bf16")
    return getattr(torch, DTYPE_NAMES[name])


def default_dtype(device: torch.device | str, *, half: bool = True, bfloat16: bool = True,
                  cpu_bfloat16: bool = True) -> torch.dtype:
    """The default compute dtype on `device` for a model that supports `half` (fp16) and `bfloat16`.

    `cpu_bfloat16=False` keeps fp32 on the CPU even where bf16 is native (diffusion, whose samplers drift in bf16).
    """
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        if half:
            return torch.float16
        if bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if kind == "cpu" and bfloat16 and cpu_bfloat16 and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def available_memory(device: torch.device | str) -> int:
    """Bytes a new allocation can use on `device`: on CUDA the driver's free memory plus what torch holds cached
    but unused (`mem_get_info` alone misses that); on the CPU MemAvailable from /proc/meminfo."""
    import os

    import torch

    placed = torch.device(device)
    if placed.type == "cuda":
        free, _ = torch.cuda.mem_get_info(placed)
        return int(free + torch.cuda.memory_reserved(placed) - torch.cuda.memory_allocated(placed))
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
