"""Control maps: the Sobel soft-edge stand-in on kornia (same maps as the formula it replaced) and the real HED
soft-edge loader (ControlNetHED.pth layout, strict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from v2v.diffusion.control import SoftEdgeHED, SoftEdgeMaps, load_softedge_model, make_control, softedge
from v2v.errors import ModelError


def old_softedge(images: torch.Tensor, blur: float = 1.5) -> torch.Tensor:
    """The hand-written formula `softedge` had before kornia (weights, kernel and padding written out)."""
    luma = (images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
    radius = max(1, round(blur * 3))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * blur**2))
    kernel = kernel / kernel.sum()
    luma = F.pad(luma, (radius,) * 4, mode="replicate")
    luma = F.conv2d(F.conv2d(luma, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, sobel.view(1, 1, 3, 3)), F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))
    magnitude = torch.sqrt(gx**2 + gy**2)
    magnitude = magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return magnitude.expand(-1, 3, -1, -1).contiguous()


def test_softedge_on_kornia_matches_the_old_formula() -> None:
    images = torch.from_numpy(np.random.default_rng(0).random((2, 3, 40, 56), dtype=np.float32))
    images = F.avg_pool2d(images, 3, 1, 1)  # some structure
    assert torch.allclose(softedge(images), old_softedge(images), atol=1e-4)
    assert torch.allclose(softedge(images, blur=0.8), old_softedge(images, blur=0.8), atol=1e-4)


def test_hed_checkpoint_round_trips_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SoftEdgeHED()
    with torch.no_grad():
        model.norm.copy_(torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1))
    state = model.state_dict()
    # the ControlNetHED.pth layout: norm, block{1..5}.convs.{i}.weight/bias, block{1..5}.projection.weight/bias
    assert "norm" in state and "block1.convs.1.weight" in state and "block5.convs.2.bias" in state
    assert "block5.projection.weight" in state and "block1.convs.2.weight" not in state
    assert len(state) == 1 + 2 * (2 + 2 + 3 + 3 + 3) + 2 * 5
    path = tmp_path / "ControlNetHED.pth"
    torch.save(state, path)
    loaded = load_softedge_model(path)
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in state.items())
    images = torch.rand(1, 3, 48, 64)
    maps = make_control(f"softedge={path}", device="cpu", dtype=torch.float32, depth_model=None, pose_model=None)
    assert isinstance(maps, SoftEdgeMaps)
    out = maps(images)
    assert out.shape == (1, 3, 48, 64) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    expected = torch.sigmoid(torch.stack([F.interpolate(side, size=(48, 64), mode="bilinear", align_corners=False)
                                          for side in model.eval()(images * 255.0)]).mean(0))
    assert torch.allclose(out[:, :1], expected, atol=1e-5)


def test_hed_loader_refuses_other_checkpoints(tmp_path: Path) -> None:
    state = SoftEdgeHED().state_dict()
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "block3.convs.2.weight"}, missing)
    extra = tmp_path / "extra.pth"
    torch.save({**state, "block6.convs.0.weight": torch.zeros(1)}, extra)
    shape = tmp_path / "shape.pth"
    torch.save({**state, "block1.projection.weight": torch.zeros(1, 64, 3, 3)}, shape)
    for path in (missing, extra, shape):
        with pytest.raises(ModelError, match="ControlNetHED"):
            load_softedge_model(path)
    with pytest.raises(ModelError, match="no such"):
        load_softedge_model(tmp_path / "nowhere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_softedge_model(tmp_path / "junk.pth")
