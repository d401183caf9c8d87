"""Control maps: the Sobel soft-edge stand-in on kornia (same maps as the formula it replaced), the real HED
soft-edge loader (ControlNetHED.pth layout, strict), and depth/soft-edge maps rescaled per shot, not per frame."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tiny_diffusion
import torch
import torch.nn.functional as F
from tiny_diffusion import max_diff, sd_config

from v2v.diffusion.control import SoftEdgeHED, SoftEdgeMaps, load_softedge_model, make_control, softedge
from v2v.errors import ModelError

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


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
    # the scale folded into the biases keeps fp16 activations 255 times under the 0-255 network's (issue 24)
    unit = maps.model.block1.convs[0](images - maps.model.norm)
    assert torch.allclose(unit * 255.0, model.block1.convs[0](images * 255.0 - model.norm), rtol=1e-4, atol=1e-3)


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


# --- depth and soft-edge maps rescaled per shot, not per frame (issue 15) --------------------------------------


def blobs(seed: int, width: int = 96, height: int = 64, contrast: float = 40.0) -> np.ndarray:
    """A static, low-contrast picture (smooth random blobs around mid-grey), float RGB in levels."""
    import cv2

    noise = np.random.default_rng(seed).normal(size=(height // 8, width // 8)).astype(np.float32)
    smooth = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.repeat((128.0 + contrast * smooth / smooth.std())[..., None], 3, axis=-1)


def flickering(scene: np.ndarray, count: int, kind: str) -> list[np.ndarray]:
    """`count` frames of one static scene whose brightness flickers: "lamp" (a small light that is on in every other
    frame) or "exposure" (a random gain per frame). The scene's edges and depth never change."""
    gains = np.random.default_rng(1).uniform(0.7, 1.3, count)
    out = []
    for index in range(count):
        image = scene * gains[index] if kind == "exposure" else scene.copy()
        if kind == "lamp" and index % 2:
            image[8:16, 8:16] = 255.0
        out.append(np.clip(image, 0, 255).round().astype(np.uint8))
    return out


def map_means(make: object, images: list[np.ndarray]) -> np.ndarray:
    """The mean of each frame's map, the frames given one at a time in clip order."""
    from v2v.frames import images_to_tensor

    return np.array([float(make(images_to_tensor([image])).mean()) for image in images])  # type: ignore[operator]


def shot_softedge() -> object:
    return make_control("softedge-sobel", device="cpu", dtype=torch.float32, depth_model=None, pose_model=None)


def flicker(means: np.ndarray) -> float:
    """How much the maps' brightness flickers: the mean change of the map mean from one frame to the next,
    relative to the map mean."""
    return float(np.abs(np.diff(means)).mean() / means.mean())


@pytest.mark.parametrize("kind", ["lamp", "exposure"])
def test_softedge_maps_of_a_flickering_shot_hold_their_brightness(kind: str) -> None:
    from v2v.diffusion.control import ShotNormalised

    images = flickering(blobs(0), 24, kind)
    shot = shot_softedge()
    assert isinstance(shot, ShotNormalised)
    per_shot, per_frame = map_means(shot, images), map_means(softedge, images)
    # the first frame of a shot gets exactly the per-frame map
    assert per_shot[0] == pytest.approx(per_frame[0], rel=1e-5)
    if kind == "lamp":  # per frame, the lamp's edge sets the maximum and dims every other edge when it is on
        assert flicker(per_frame) > 0.3 and flicker(per_shot) < flicker(per_frame) / 5
    else:  # a gain scales the Sobel magnitude; per shot the frame's level cancels it (a fixed range would not)
        assert flicker(per_shot) < 0.005, flicker(per_shot)


def spiking_depth(count: int, height: int = 48, width: int = 64) -> list[torch.Tensor]:
    """Raw (1, 1, H, W) maps of a static depth scene (a ramp) whose nearest point spikes in every other frame, each
    with its own scale and offset, as a relative depth model gives them."""
    ramp = torch.linspace(0.0, 1.0, height).view(1, 1, height, 1).expand(1, 1, height, width)
    rng = np.random.default_rng(2)
    raws = []
    for index in range(count):
        depth = ramp.clone()
        depth[..., 20:24, 30:34] = 3.0 if index % 2 else 1.0
        raws.append(depth * rng.uniform(0.8, 1.2) + rng.uniform(-0.5, 0.5))
    return raws


def test_depth_like_maps_of_a_shot_hold_their_brightness() -> None:
    from v2v.diffusion.control import ShotNormalised

    raws = spiking_depth(20)
    given = iter(raws)
    shot = ShotNormalised(lambda images: next(given), anchored=False)
    picture = torch.from_numpy(blobs(3, 64, 48)).permute(2, 0, 1)[None].float().div(255.0)  # one scene: no cut
    maps = [shot(picture)[:, :1] for _ in raws]
    per_frame = [(raw - raw.amin()) / (raw.amax() - raw.amin()) for raw in raws]  # DepthMaps' per-frame rescale
    assert torch.allclose(maps[0], per_frame[0], atol=1e-5)  # the shot's first frame: its own min-max map
    means, frame_means = np.array([float(m.mean()) for m in maps]), np.array([float(m.mean()) for m in per_frame])
    assert flicker(frame_means) > 0.3 and flicker(means) < flicker(frame_means) / 5


def test_shot_normalisation_restarts_at_a_cut_and_when_closed() -> None:
    from v2v.frames import images_to_tensor
    from v2v.scenes import is_cut

    first = flickering(blobs(0), 9, "lamp")  # ends with the lamp on: its running range differs from the next shot's
    second = flickering(np.clip(blobs(5, contrast=60) - 40, 0, 255), 6, "lamp")
    assert is_cut(first[-1], second[0]) and not any(is_cut(a, b) for a, b in zip(second, second[1:], strict=False))

    def maps(make: object, images: list[np.ndarray]) -> list[torch.Tensor]:
        return [make(images_to_tensor([image])) for image in images]  # type: ignore[operator]

    through = shot_softedge()
    maps(through, first)
    after_cut = maps(through, second)
    fresh = maps(shot_softedge(), second)
    assert all(torch.equal(a, b) for a, b in zip(after_cut, fresh, strict=True))  # nothing of the first shot is left
    assert torch.equal(after_cut[0], softedge(images_to_tensor(second[:1])))  # a shot starts at its per-frame map
    # no cut (the second shot's frames again: the shot goes on): the running range carries on
    assert not is_cut(second[-1], second[0]) and not torch.equal(maps(through, second)[0], fresh[0])
    through.close()  # a pass ends (the stage closes its controls): the next pass starts afresh
    assert all(torch.equal(a, b) for a, b in zip(maps(through, second), fresh, strict=True))


def test_restyle_stage_rescales_per_shot_by_default(tiny: Path) -> None:
    """The default path: RestyleStage with the tiny SD + ControlNet on soft edges and depth maps rescaled per shot,
    frames in clip order across calls; per frame when asked. The stage's declared context says a segment only
    approximates one pass (the running range reaches back), even with temporal off."""
    from v2v.diffusion.control import DepthMaps, ShotNormalised
    from v2v.diffusion.stage import RestyleStage
    from v2v.frames import Frame

    net = str(tiny / "controlnet")
    images = flickering(blobs(0), 6, "lamp")
    config = sd_config(tiny, controlnets=[net, net], controls=["softedge-sobel", "depth"],
                       depth_model=str(tiny / "depth"), control_scales=[0.5, 0.5], temporal=False)  # fmt: skip
    stage = RestyleStage(config)
    assert config.control_norm == "shot" and all(isinstance(make, ShotNormalised) for make in stage.controls)
    assert not stage.context.exact and stage.context.before == stage.WARM_UP_FRAMES
    seen: list[torch.Tensor] = []
    softedge_maps = stage.controls[0]
    stage.controls[0] = lambda frames: seen.append(softedge_maps(frames)) or seen[-1]  # type: ignore[func-returns-value]
    frames_in = [Frame(image, index) for index, image in enumerate(images)]
    outputs = [frame.image for frame in stage.process(iter(frames_in))]
    expected = map_means(shot_softedge(), images)
    assert np.allclose([float(m.mean()) for m in seen], expected, rtol=1e-5)  # the shot's maps reached the ControlNet
    assert flicker(expected) < flicker(map_means(softedge, images)) / 5
    softedge_maps.close()  # what the stage's process() does at its end (the spy has no close)

    per_frame = RestyleStage(dataclasses.replace(config, control_norm="frame"))
    assert per_frame.controls[0] is softedge and isinstance(per_frame.controls[1], DepthMaps)
    assert per_frame.context.exact  # temporal off, per-frame maps: each frame stands alone
    assert max_diff([frame.image for frame in per_frame.process(iter(frames_in))], outputs) > 0
    assert [frame.image.shape for frame in stage.process(iter(frames_in[:1]))] == [(64, 96, 3)]


def test_control_norm_is_checked_and_reaches_the_config() -> None:
    import argparse

    from v2v.commands.restyle import add_arguments, config_from_args
    from v2v.diffusion.config import RestyleConfig
    from v2v.errors import UsageError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["in.mp4", "-o", "out.mp4", "--model", "m", "--control-norm", "frame"])
    assert config_from_args(args).control_norm == "frame"
    assert config_from_args(parser.parse_args(["in.mp4", "-o", "out.mp4", "--model", "m"])).control_norm == "shot"
    with pytest.raises(UsageError, match="shot or frame"):
        RestyleConfig(model="m", control_norm="clip").check()
    with pytest.raises(UsageError, match="normalisation"):
        make_control("softedge", device="cpu", dtype=torch.float32, depth_model=None, pose_model=None, norm="clip")
