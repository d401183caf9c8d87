"""The ncnn reader: .param text and .bin weights in both storage types, on small files written here."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from ncnn_export import Writer

from v2v.errors import ModelError
from v2v.restore.ncnn import load_ncnn, parse_param


def _two_layer_model(tmp_path, storage):
    rng = np.random.default_rng(0)
    weights = {
        "conv": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float32),
        "slope": rng.standard_normal(4).astype(np.float32),
        "conv2": rng.standard_normal((5, 4, 3, 3)).astype(np.float32),  # 180 values: fp16 needs no padding
        "bias2": rng.standard_normal(5).astype(np.float32),
    }
    w = Writer(storage)
    w.layer("Input", [], ["data"])
    w.conv("data", "a", weights["conv"], weights["bias"], leaky=True)
    w.prelu("a", "b", weights["slope"])
    w.conv("b", "output", weights["conv2"], weights["bias2"])
    return w.save(tmp_path, f"tiny-{storage}"), weights


@pytest.mark.parametrize("storage", ["fp32", "fp16"])
def test_weights_read_back_in_both_storage_types(tmp_path, storage):
    (param, _), expected = _two_layer_model(tmp_path, storage)
    model = load_ncnn(param)
    assert [layer.type for layer in model.layers] == ["Input", "Convolution", "PReLU", "Convolution"]
    conv, prelu, conv2 = model.layers[1:]
    stored = (lambda a: a.astype(np.float16).astype(np.float32)) if storage == "fp16" else (lambda a: a)
    np.testing.assert_array_equal(model.weights[conv.name][0], stored(expected["conv"]).ravel())
    np.testing.assert_array_equal(model.weights[conv.name][1], expected["bias"])  # biases stay fp32
    np.testing.assert_array_equal(model.weights[prelu.name][0], expected["slope"])
    np.testing.assert_array_equal(model.weights[conv2.name][0], stored(expected["conv2"]).ravel())
    if storage == "fp16":
        assert not np.array_equal(model.weights[conv.name][0], expected["conv"].ravel())


def test_fp16_arrays_with_odd_length_are_padded_to_four_bytes(tmp_path):
    rng = np.random.default_rng(1)
    w = Writer("fp16")
    w.layer("Input", [], ["data"])
    odd = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)  # 27 values: 54 bytes + 2 of padding
    w.conv("data", "a", odd, np.zeros(1, np.float32))
    w.conv("a", "output", rng.standard_normal((2, 1, 3, 3)).astype(np.float32), np.ones(2, np.float32))
    param, _ = w.save(tmp_path, "odd")
    model = load_ncnn(param)
    np.testing.assert_array_equal(model.weights[model.layers[2].name][1], [1.0, 1.0])


def test_params_parse_ints_floats_and_arrays():
    text = "7767517\n2 2\nInput in 0 1 data\nConvolution c 1 1 data out 0=8 1=3 5=1 6=216 9=2 -23310=1,2.000000e-01\n"
    conv = parse_param(text)[1]
    assert conv.inputs == ("data",) and conv.outputs == ("out",)
    assert conv.params[0] == 8 and isinstance(conv.params[0], int)
    assert conv.params[10] == [pytest.approx(0.2)]


def test_eight_bit_table_storage(tmp_path):
    table = np.linspace(-1, 1, 256, dtype=np.float32)
    indices = np.arange(27, dtype=np.uint8) * 9
    w = Writer("fp32")
    w.layer("Input", [], ["data"])
    w.layer("Convolution", ["data"], ["output"], "0=1 1=3 4=1 5=1 6=27")
    w.data += bytes([1, 2, 3, 4]) + table.tobytes() + indices.tobytes() + b"\0" + struct.pack("<f", 0.5)
    param, _ = w.save(tmp_path, "table")
    weight, bias = load_ncnn(param).weights[w.lines[1].split()[1]]
    np.testing.assert_array_equal(weight, table[indices])
    assert bias[0] == 0.5


def test_bad_files_say_what_is_wrong(tmp_path):
    (param, weights), _ = _two_layer_model(tmp_path, "fp32")
    data = weights.read_bytes()
    weights.write_bytes(data[:-8])
    with pytest.raises(ModelError, match="ends early"):
        load_ncnn(param)
    weights.write_bytes(data + b"\0" * 8)
    with pytest.raises(ModelError, match="8 bytes more"):
        load_ncnn(param)
    weights.write_bytes(data)
    param.write_text("not a model\n")
    with pytest.raises(ModelError, match="not an ncnn .param"):
        load_ncnn(param)
    param.write_text("7767517\n2 2\nInput in 0 1 data\nLSTM lstm 1 1 data out 0=8 1=64\n")
    with pytest.raises(ModelError, match="LSTM"):
        load_ncnn(param)
    with pytest.raises(ModelError, match="not found"):
        load_ncnn(tmp_path / "missing.param")
