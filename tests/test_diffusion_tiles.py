"""Frames larger than the model: overlapping latent tiles blended every step (`v2v.diffusion.tiles`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
import tiny_dit  # noqa: E402
from tiny_diffusion import sd_config, translating  # noqa: E402

from v2v.diffusion import tiles  # noqa: E402
from v2v.diffusion.stage import RestyleStage  # noqa: E402

tiny = tiny_diffusion.tiny
tiny_flux = tiny_dit.tiny_flux
one_thread = tiny_diffusion.one_thread


SPANS = [(135, 64, 16, 8), (240, 64, 16, 8), (12, 6, 2, 2), (100, 48, 0, 8), (37, 16, 4, 1), (5, 2, 0, 2)]


@pytest.mark.parametrize(("size", "tile", "overlap", "align"), SPANS)
def test_spans_cover_the_grid_aligned_and_overlapping(size: int, tile: int, overlap: int, align: int) -> None:
    found = tiles.spans(size, tile, overlap, align)
    assert found[0][0] == 0 and found[-1][1] == size
    for (start, stop), (after, _) in zip(found, found[1:], strict=False):
        assert start % align == 0 and after % align == 0
        assert stop - start == tile and stop - after >= overlap  # no gap, at least the overlap shared
    assert len(found) == 1 or all(start < after for (start, _), (after, _) in zip(found, found[1:], strict=False))
    assert tile <= found[-1][1] - found[-1][0] < tile + align


def stub_denoiser(sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                  controlnet_cond: torch.Tensor, return_dict: bool = True) -> tuple:  # fmt: skip
    """An identity-like denoiser: each output value depends only on the inputs at its own place (and the text, which
    every tile sees whole), at the latent scale, the 8x pixel scale and a UNet's 1/2 and 1/4 levels."""
    pixels = torch.nn.functional.avg_pool2d(controlnet_cond, 8)  # the 8x condition back on the latent grid
    out = sample * 0.5 + timestep + pixels[:, :1] + encoder_hidden_states.mean()
    return out, [torch.nn.functional.avg_pool2d(sample, 2), torch.nn.functional.avg_pool2d(sample, 4)]


def test_an_identity_like_denoiser_tiled_equals_untiled_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    height, width = 40, 72  # latent units
    sample = torch.randn(2, 4, height, width, generator=generator)
    condition = torch.rand(2, 3, height * 8, width * 8, generator=generator)
    text = torch.randn(2, 77, 32, generator=generator)
    whole = stub_denoiser(sample, torch.tensor(3.0), text, condition)
    grid = tiles.plan_tiles(height, width, 16, 4, 4)
    assert grid is not None and grid.count > 6
    told = []
    tiled = tiles.TiledForward(stub_denoiser, grid, on_tile=told.append)(sample, torch.tensor(3.0), text,
                                                                          controlnet_cond=condition)  # fmt: skip
    assert torch.equal(tiled[0], whole[0])
    assert all(torch.equal(a, b) for a, b in zip(tiled[1], whole[1], strict=True))
    assert told == [*range(grid.count), 0]  # each tile told to the bank, then back to tile 0


def test_packed_tokens_are_tiled_before_packing_and_positions_rebased() -> None:
    """FLUX's layout: (B, N, C) tokens of 2x2 latent patches, row-major, and (N, 3) position ids; a pointwise
    denoiser gives the untiled result, and each tile sees ids starting at (0, 0) as a frame of its size would."""
    rows, columns = 20, 36  # tokens
    hidden = torch.randn(1, rows * columns, 64, generator=torch.Generator().manual_seed(1))
    ids = torch.zeros(rows * columns, 3)
    ids[:, 1] = torch.arange(rows)[:, None].expand(rows, columns).flatten()
    ids[:, 2] = torch.arange(columns)[None, :].expand(rows, columns).flatten()
    seen = []

    def denoiser(hidden_states: torch.Tensor, img_ids: torch.Tensor, encoder_hidden_states: torch.Tensor) -> tuple:
        seen.append((img_ids[:, 1:].min(0).values.tolist(), img_ids[:, 1:].max(0).values.tolist()))
        return (hidden_states.square() + 1,)

    grid = tiles.plan_tiles(rows * 2, columns * 2, 16, 4, 2)
    assert grid is not None
    text = torch.randn(1, rows * columns, 8)  # as long as the image tokens: still never cut
    tiled = tiles.TiledForward(denoiser, grid, packed=True, patch=2)(hidden_states=hidden, img_ids=ids,
                                                                     encoder_hidden_states=text)  # fmt: skip
    assert torch.equal(tiled[0], hidden.square() + 1)
    assert len(seen) == grid.count and all(low == [0, 0] for low, _ in seen)
    assert max(high for _, high in seen) == [7, 7]  # 16 latent units = 8 tokens a side


def test_the_stage_with_an_identity_like_unet_tiled_equals_untiled(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the whole pipeline (scheduler, callbacks, the VAE tiled alike): only the denoiser's tiling differs."""
    def pointwise(self: object, sample: torch.Tensor, timestep: torch.Tensor, *args: object, **kwargs: object) -> tuple:
        return (torch.tanh(sample) * 0.3 + timestep.float() / 1000,)

    from diffusers import UNet2DConditionModel

    monkeypatch.setattr(UNet2DConditionModel, "forward", pointwise)
    image = translating(1, 160, 96)[0]
    stage = RestyleStage(sd_config(tiny, tile=48, tile_overlap=16))
    tiled = stage.diffuse([image], [0])[0]
    monkeypatch.setattr(stage, "_tile_grid", lambda height, width: None)
    untiled = stage.diffuse([image], [0])[0]
    assert np.array_equal(tiled, untiled)


def test_no_seam_at_tile_borders_with_a_real_tiny_model(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No row or column at a tile border jumps more, against its neighbours and the source's there, than any other
    line does; diffusing the tiles one by one and pasting them (no blending) does show its seams."""
    width, height = 192, 128
    source = translating(1, width, height)[0]
    config = dict(temporal=False, steps=4, strength=0.75)
    stage = RestyleStage(sd_config(tiny, tile=64, tile_overlap=16, **config))
    with caplog.at_level(logging.INFO, logger="v2v.diffusion.stage"):
        tiled = stage.diffuse([source], [0])[0]
        stage.diffuse([source], [1])
    told = [r.message for r in caplog.records if r.message.startswith("tiled diffusion")]
    assert told == ["tiled diffusion: 192x128 frames in 3 x 4 tiles of 64x64 px, neighbours sharing 16 px, blended "
                    "every step (diffusers' VAE tiling); --tile N|off sets the tile"]  # once  # fmt: skip
    grid = stage._tile_grid(height, width)
    lines = tiles.borders(grid, 8)
    whole = RestyleStage(sd_config(tiny, tile=0, **config))
    pasted = np.zeros_like(source)
    for (top, bottom), (left, right) in grid.tiles():
        piece = np.ascontiguousarray(source[top * 8 : bottom * 8, left * 8 : right * 8])
        pasted[top * 8 : bottom * 8, left * 8 : right * 8] = whole.diffuse([piece], [0])[0]
    for axis in (0, 1):
        border, elsewhere = tiles.seam_excess(tiled, source, axis, lines[axis])
        assert border <= elsewhere, (axis, border, elsewhere)
        border, elsewhere = tiles.seam_excess(pasted, source, axis, lines[axis])
        assert border > elsewhere, (axis, border, elsewhere)  # the test sees a seam where there is one


@pytest.mark.parametrize(("arguments", "message"), [
    (["--tile", "8"], "--tile must be at least 16 pixels for Stable Diffusion 1.x/2.x (tiles are whole multiples of "
                      "16, the model's latent multiple), got 8; 'off' turns tiling off"),
    (["--tile", "64", "--tile-overlap", "40"], "--tile-overlap must be from 0 to half the tile (32), got 40"),
])  # fmt: skip
def test_bad_tiles_are_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str],
                                message: str) -> None:  # fmt: skip
    from conftest import write_clip

    from v2v.cli import main

    clip = write_clip(tmp_path / "in.mp4", 2)
    code = main(["restyle", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny / "sd"), "--prompt", "ink",
                 "--steps", "2", "--no-progress", *arguments])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"v2v: error: {message}"]


def test_memory_is_bounded_by_the_tile_not_the_frame(tiny: Path) -> None:
    """What makes memory grow with the frame (the denoiser's activations, its self-attention and the VAE's mid-block
    attention, quadratic in positions) never sees more than a tile; 1920x1080 and 4K figures: scripts/bench_tiles.py."""
    seen: dict[str, int] = {"unet": 0, "controlnet": 0, "vae attention": 0}

    def record(name: str) -> object:
        def hook(module: object, args: tuple, kwargs: dict) -> None:
            sample = args[0] if args else next(iter(kwargs.values()))
            positions = sample.shape[-2] * sample.shape[-1] if sample.ndim == 4 else sample.shape[1]
            seen[name] = max(seen[name], positions)
        return hook

    stage = RestyleStage(sd_config(tiny, tile=64, tile_overlap=16, controlnets=[str(tiny / "controlnet")]))
    # inside the models (their own hooks run once a call, on the whole frame's latents, as the pipeline hands them)
    stage.pipe.unet.conv_in.register_forward_pre_hook(record("unet"), with_kwargs=True)
    stage.pipe.controlnet.conv_in.register_forward_pre_hook(record("controlnet"), with_kwargs=True)
    for coder in (stage.pipe.vae.encoder, stage.pipe.vae.decoder):
        coder.mid_block.attentions[0].register_forward_pre_hook(record("vae attention"), with_kwargs=True)
    stage.diffuse(translating(1, 256, 128), [0])
    tile_latent = (64 // 8) ** 2
    assert seen == {"unet": tile_latent, "controlnet": tile_latent, "vae attention": tile_latent}  # 32 x 16 untiled


def test_flux_packed_tokens_with_a_controlnet_tiled_without_seams(tiny_flux: Path) -> None:
    """FLUX packs 2x2 latent patches into tokens: the frame is tiled on the latent grid before packing, the
    ControlNet's block samples blended like the transformer's output."""
    from v2v.diffusion.config import RestyleConfig

    width, height = 192, 128
    source = translating(1, width, height)[0]
    config = RestyleConfig(model=str(tiny_flux / "flux"), controlnets=[str(tiny_flux / "flux-controlnet")],
                           prompt="ink", steps=4, strength=0.75, seed=1, temporal=False, tile=64, tile_overlap=16)
    stage = RestyleStage(config)
    tiled = stage.diffuse([source], [0])[0]
    grid = stage._tile_grid(height, width)
    assert grid is not None and grid.count == 12
    lines = tiles.borders(grid, 8)
    for axis in (0, 1):
        border, elsewhere = tiles.seam_excess(tiled, source, axis, lines[axis])
        assert border <= elsewhere, (axis, border, elsewhere)


def test_an_edit_dit_whose_sequence_holds_the_source_is_not_tiled(tiny_flux: Path) -> None:
    """FLUX.1 Kontext puts the source image's tokens in the sequence: `--tile` is refused in one line, and by default
    its frames are never tiled."""
    from v2v.diffusion.config import EditConfig
    from v2v.diffusion.stage import EditStage
    from v2v.errors import UsageError

    config = dict(model=str(tiny_flux / "flux-kontext"), instruction="make it ink", steps=1)
    with pytest.raises(UsageError, match=r"^FLUX.1 Kontext frames are not tiled \(the source image's tokens share "
                                         r"the sequence\): drop tile, or use max_side$"):  # fmt: skip
        EditStage(EditConfig(**config, tile=64))
    assert EditStage(EditConfig(**config)).tiling is None


def test_relight_keeps_its_conditions_per_tile(tiny: Path, tmp_path: Path) -> None:
    """IC-Light's widened `conv_in` keeps the conditions' latents beside the UNet's inputs: a tiled frame's UNet gets
    them cut to its tile (`tiles.cut_to_tile`), and the relit frame shows no seam."""
    from tiny_relight import write_ic_light

    from v2v.diffusion.config import RelightConfig
    from v2v.diffusion.relight import RelightStage

    width, height = 192, 128
    source = translating(1, width, height)[0]
    offsets = write_ic_light(tmp_path / "fc.safetensors", tiny / "sd" / "unet", 8)
    stage = RelightStage(RelightConfig(model=str(tiny / "sd"), prompt="a lamp", ic_light=str(offsets), steps=4,
                                       strength=0.75, seed=3, temporal=False, light="left", tile=64, tile_overlap=16))
    relit = stage.diffuse([source], [0])[0]
    grid = stage._tile_grid(height, width)
    assert relit.shape == source.shape and grid is not None and grid.count == 12
    lines = tiles.borders(grid, 8)
    for axis in (0, 1):
        border, elsewhere = tiles.seam_excess(relit, source, axis, lines[axis])
        assert border <= elsewhere, (axis, border, elsewhere)
