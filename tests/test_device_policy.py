"""The one device and dtype policy: whatever takes a `device` leaves the choice to `v2v.devices.resolve_device`
(default None), and a restoration network's dtype comes from its `ModelTraits`."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

import v2v
from v2v.errors import UsageError
from v2v.restore.registry import ModelTraits

# Not exported, but public and taking a device: they follow the same policy.
MORE = (
    "v2v.restore.upscale:Upscaler", "v2v.restore.sr_models:load_model", "v2v.restore.sr_models:load_named",
    "v2v.restore.sr_models:load_file", "v2v.consistency.fusion:TemporalFuser", "v2v.flow.raft:RAFTFlow",
    "v2v.flow.raft:load_raft",
)  # fmt: skip


def _device_defaults() -> dict[str, object]:
    """name -> the default of its `device` parameter, for every export and MORE that takes one."""
    found = {}
    targets = {name: getattr(v2v, name) for name in v2v._EXPORTS}
    for path in MORE:
        module, _, name = path.partition(":")
        targets[path] = getattr(importlib.import_module(module), name)
    for name, target in targets.items():
        if not callable(target) or (inspect.isclass(target) and issubclass(target, BaseException)):
            continue
        parameter = inspect.signature(target).parameters.get("device")
        if parameter is not None:
            found[name] = parameter.default
    return found


def test_everything_that_takes_a_device_defaults_to_none() -> None:
    defaults = _device_defaults()
    stages = {"UpscaleStage", "VideoSRStage", "Interpolator", "StabilizeStage", "InterpolateStage", "DenoiseStage"}
    assert stages <= set(defaults)
    assert set(MORE) <= set(defaults)
    assert {name: default for name, default in defaults.items() if default is not None} == {}


def test_restoration_networks_declare_their_traits() -> None:
    from v2v.restore.basicvsr import BasicVSR
    from v2v.restore.ffdnet import FFDNet
    from v2v.restore.rife import IFNet

    assert (BasicVSR.traits.scale, FFDNet.traits.scale, IFNet.traits.size_multiple) == (4, 1, 64)
    assert IFNet.multiple(1.0) == IFNet.traits.size_multiple


def test_the_dtype_follows_the_traits() -> None:
    cpu = torch.device("cpu")
    full = ModelTraits("Full")
    assert full.dtype(cpu, "bf16") == torch.bfloat16 and full.dtype(cpu, torch.float32) == torch.float32
    assert ModelTraits("NoBF16", supports_bfloat16=False).dtype(cpu, "auto") == torch.float32
    with pytest.raises(UsageError, match="fp16 is for CUDA"):
        full.dtype(cpu, "fp16")
    with pytest.raises(UsageError, match="NoHalf does not support fp16"):
        ModelTraits("NoHalf", supports_half=False).dtype(torch.device("cuda"), "fp16")
    with pytest.raises(UsageError, match="NoBF16 does not support bf16"):
        ModelTraits("NoBF16", supports_bfloat16=False).dtype(cpu, "bf16")
    with pytest.raises(UsageError, match="unknown dtype"):
        full.dtype(cpu, "fp8")


def test_a_thread_count_no_machine_has_is_one_usage_line() -> None:
    """torch.set_num_threads overflows on 10**19 (found by the option fuzzer): the one thread policy refuses it."""
    from v2v.devices import set_threads
    from v2v.errors import UsageError

    with pytest.raises(UsageError, match="more threads than any machine has"):
        set_threads(10**19)
