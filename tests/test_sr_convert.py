"""The ncnn importer: randomly initialised spandrel architectures round-trip through ncnn files."""

from __future__ import annotations

import pytest
import torch
from ncnn_export import Writer, export_compact, export_rrdb, randomise
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from v2v.errors import ModelError
from v2v.restore.ncnn import load_ncnn
from v2v.restore.ncnn_import import import_ncnn
from v2v.restore.sr_models import load_file


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("V2V_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("storage, tolerance", [("fp32", 1e-6), ("fp16", 1e-3)])
@pytest.mark.parametrize("upscale", [2, 4])
def test_compact_round_trip(tmp_path, storage, tolerance, upscale):
    original = randomise(Compact(num_feat=8, num_conv=3, upscale=upscale))
    param, _ = export_compact(original, tmp_path, "compact", storage)
    loaded = load_file(param)
    assert (loaded.architecture, loaded.scale, loaded.resize) == ("Compact", upscale, None)
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        expected, got = original(x), loaded.descriptor.model(x)
    assert got.shape == (2, 3, 19 * upscale, 23 * upscale)
    assert (got - expected).abs().max() < tolerance


@pytest.mark.parametrize("storage, tolerance", [("fp32", 1e-5), ("fp16", 1e-3)])
def test_rrdb_round_trip(tmp_path, storage, tolerance):
    original = randomise(ESRGAN(num_filters=8, num_blocks=2, scale=4))
    param, _ = export_rrdb(original, tmp_path, "rrdb", storage)
    imported = import_ncnn(load_ncnn(param))
    assert imported.architecture == "RRDBNet"
    assert "body.1.rdb3.conv5.weight" in imported.state_dict and "conv_up2.weight" in imported.state_dict
    loaded = load_file(param)
    assert (loaded.architecture, loaded.scale) == ("ESRGAN", 4)
    x = torch.rand(1, 3, 17, 21)
    with torch.no_grad():
        assert (loaded.descriptor.model(x) - original(x)).abs().max() < tolerance


def test_trailing_resize_is_kept(tmp_path):
    original = randomise(Compact(num_feat=8, num_conv=2, upscale=4))
    param, _ = export_compact(original, tmp_path, "x4-then-half", resize=0.5)
    imported = import_ncnn(load_ncnn(param))
    assert (imported.resize, imported.resize_mode) == (0.5, "bicubic")
    loaded = load_file(param)
    assert (loaded.net_scale, loaded.scale, loaded.resize) == (4, 2.0, 0.5)


def test_other_graphs_are_refused_with_what_was_tried(tmp_path):
    w = Writer("fp32")
    w.layer("Input", [], ["data"])
    w.conv("data", "a", torch.randn(8, 3, 3, 3).numpy(), torch.zeros(8).numpy())
    w.layer("ReLU", ["a"], ["b"])
    w.conv("b", "output", torch.randn(3, 8, 3, 3).numpy(), torch.zeros(3).numpy())
    param, _ = w.save(tmp_path, "plain")
    with pytest.raises(ModelError, match="tried.*SRVGGNetCompact.*RRDBNet.*Real-CUGAN.*SPAN"):
        import_ncnn(load_ncnn(param))
    with pytest.raises(ModelError, match="unsupported ncnn graph"):
        load_file(param)
