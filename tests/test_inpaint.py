"""Inpainting without diffusion (issue 13): masks carried by flow, flow fill, compositing, `v2v mask` and
`v2v inpaint` (flow fill + Telea), bad input. The diffusion families are in test_inpaint_diffusion.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import write_clip

from v2v import cli
from v2v.frames import Frame
from v2v.inpaint.composite import composite, coverage
from v2v.inpaint.fill import FillWindow, telea
from v2v.inpaint.propagate import PropagatedMask, propagate_step
from v2v.io.reader import open_source

HEIGHT, WIDTH, SIDE = 96, 128, 24


def texture(height: int, width: int, seed: int, scale: int = 6) -> np.ndarray:
    """Smooth random colour texture (something optical flow can lock on to)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // scale + 2, width // scale + 2, 3)).astype(np.uint8)
    return cv2.resize(small, (width + 2 * scale, height + 2 * scale), interpolation=cv2.INTER_CUBIC)[:height, :width]


BACKGROUND = texture(HEIGHT + 40, WIDTH + 40, 0)
SQUARE = texture(SIDE, SIDE, 1, 3)


def scene(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame `index` of a panning background with a textured square moving over it: (frame, clean background,
    the square's true mask float (H, W) 0/1)."""
    clean = BACKGROUND[0:HEIGHT, index // 2 : index // 2 + WIDTH].copy()
    x, y = 8 + 3 * index, 30 + index // 2
    image = clean.copy()
    image[y : y + SIDE, x : x + SIDE] = SQUARE
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    mask[y : y + SIDE, x : x + SIDE] = 1
    return image, clean, mask


def write_scene(path: Path, count: int, fps: int = 10, picture: Callable[[int], np.ndarray] | None = None) -> Path:
    """The scene (or `picture(index)`'s frames) as a lossless video (FFV1 in RGB), so the source pixels are known
    exactly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "bgr0"
        for index in range(count):
            image = picture(index) if picture else scene(index)[0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    cv2.imwrite(str(path), (mask * 255).astype(np.uint8))
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 0.5, b >= 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def frames_of(path: Path | str) -> list[np.ndarray]:
    with open_source(path) as reader:
        return [frame.image for frame in reader]


def run_cli(*args: str) -> int:
    return cli.main([*map(str, args)])


# --- masks carried by flow ---------------------------------------------------------------------------------------


def test_propagated_mask_follows_a_moving_square_for_30_frames() -> None:
    from v2v.flow import make_flow_estimator

    estimator = make_flow_estimator("dis", preset="fine")
    image, _, mask = scene(0)
    for index in range(1, 31):
        following, _, truth = scene(index)
        mask = propagate_step(mask, image, following, estimator)
        image = following
    assert iou(mask, truth) >= 0.9


def test_mask_is_carried_backward_and_forward_from_frame_n(tmp_path: Path) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 31)
    drawn = write_mask(tmp_path / "m.png", scene(15)[2])
    masks = PropagatedMask(clip, drawn, 15)
    try:
        got = {frame.index: mask for frame, mask in masks.masks()}
    finally:
        masks.close()
    assert sorted(got) == list(range(31))
    for index in (0, 15, 30):
        assert iou(got[index], scene(index)[2]) >= 0.9, index


def make_sample_module():
    spec = importlib.util.spec_from_file_location("make_sample", Path(__file__).parent.parent / "samples" /
                                                  "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_carried_mask_keeps_the_samples_fast_ball(tmp_path: Path) -> None:
    """The sample's ball (radius 22, up to 12 pixels a frame, flat red) outruns DIS: carried by flow alone its mask
    broke into blobs off the ball by frame 20 (IoU under 0.3); re-anchored on its look it stays on it."""
    sample = make_sample_module()
    clip = sample.render(tmp_path / "sample.mp4")
    masks = PropagatedMask(clip, sample.ball_mask(0).astype(np.float32), 0)
    try:
        for frame, mask in masks.masks():
            if frame.index >= 15:
                assert iou(mask, sample.ball_mask(frame.index)) >= 0.5, frame.index
            if frame.index == 25:
                break
    finally:
        masks.close()


def jumping_square(path: Path, where: tuple[int, int] | None) -> Path:
    """The scene's 10 frames, but from frame 6 the square is at `where` (y, x), or gone (None)."""
    def picture(index: int) -> np.ndarray:
        image, clean, _ = scene(index)
        if index < 6:
            return image
        if where is not None:
            clean[where[0] : where[0] + SIDE, where[1] : where[1] + SIDE] = SQUARE
        return clean

    return write_scene(path, 10, picture=picture)


def test_a_carried_mask_finds_its_object_again_after_a_jump(tmp_path: Path) -> None:
    """At frame 6 the square jumps across the frame, far from where the flow and the search around it look: the
    whole frame is searched for it."""
    masks = PropagatedMask(jumping_square(tmp_path / "clip.mkv", (60, 96)), scene(0)[2], 0)
    try:
        got = [mask for _, mask in masks.masks()]
    finally:
        masks.close()
    truth = np.zeros((HEIGHT, WIDTH), np.float32)
    truth[60 : 60 + SIDE, 96 : 96 + SIDE] = 1
    assert min(iou(mask, truth) for mask in got[6:]) >= 0.9


def test_a_mask_that_loses_its_object_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """At frame 6 the square is gone: nothing looks like it any more, and `v2v mask` stops naming the frame and the
    way out."""
    clip = jumping_square(tmp_path / "clip.mkv", None)
    drawn = write_mask(tmp_path / "m.png", scene(0)[2])
    assert run_cli("mask", clip, "--mask", drawn, "-o", tmp_path / "masks/%05d.png", "--no-progress") != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("v2v: error")]
    assert len(errors) == 1 and "lost its object at frame 6" in errors[0] and "pass a mask video" in errors[0], errors


def test_a_run_with_a_carried_mask_opens_its_source_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's reader and the one `SourceFrames` it hands the stage: the frame numbers, the frames carried
    back from the anchor (two chunks) and the size all come from those, the clip is never reopened by path."""
    from v2v.commands.mask import MaskStage
    from v2v.inpaint.spec import MaskSpec
    from v2v.pipeline import run

    clip = write_scene(tmp_path / "clip.mkv", 30)
    drawn = write_mask(tmp_path / "m.png", scene(20)[2])
    opened: list[str] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    masks = MaskSpec(str(drawn), str(clip), "image", frame=20).open()
    run(clip, [MaskStage(masks)], tmp_path / "masks/%05d.png", progress=False)
    assert opened.count(str(clip)) == 2, opened
    written = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) / 255.0 for path in sorted((tmp_path / "masks").iterdir())]
    assert len(written) == 30
    assert min(iou(mask, scene(index)[2]) for index, mask in enumerate(written)) >= 0.9


def test_mask_command_writes_the_propagated_mask_as_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 12)
    drawn = write_mask(tmp_path / "m.png", scene(5)[2])
    assert run_cli("mask", clip, "--mask", drawn, "--mask-frame", 5, "-o", tmp_path / "masks/%05d.png",
                   "--no-progress") == 0
    written = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) / 255.0 for path in sorted((tmp_path / "masks").iterdir())]
    assert len(written) == 12
    assert min(iou(mask, scene(index)[2]) for index, mask in enumerate(written)) >= 0.9
    # and the images go back in as a mask sequence, one per frame
    assert run_cli("mask", clip, "--mask", tmp_path / "masks/%05d.png", "-o", tmp_path / "again/%05d.png",
                   "--no-progress") == 0
    again = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted((tmp_path / "again").iterdir())]
    assert all(np.array_equal(a, (b * 255).round()) for a, b in zip(again, written, strict=True))



def test_mask_frame_counts_the_clips_frames_whatever_start_says(tmp_path: Path) -> None:
    """--mask-frame N is frame N of the whole clip, as the user sees it (the numbers `v2v mask` writes for the whole
    clip), also when --start cuts the clip: a run from 0.5 s (frame 5 at 10 frames/s) gets the same masks as the
    whole clip's frames 5.., from an anchor inside the window or before it."""
    clip = write_scene(tmp_path / "clip.mkv", 20)

    def masks(folder: Path) -> list[np.ndarray]:
        return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted(folder.iterdir())]

    for anchor in (12, 2):
        drawn = write_mask(tmp_path / f"m{anchor}.png", scene(anchor)[2])
        common = ["--mask", drawn, "--mask-frame", anchor, "--no-progress"]
        whole, window = tmp_path / f"whole{anchor}", tmp_path / f"window{anchor}"
        assert run_cli("mask", clip, *common, "-o", whole / "%03d.png") == 0
        assert run_cli("mask", clip, *common, "--start", 0.5, "-o", window / "%03d.png") == 0
        first, rest = masks(whole), masks(window)
        assert len(first) == 20 and len(rest) == 15
        assert all(np.array_equal(a, b) for a, b in zip(rest, first[5:], strict=True)), anchor
        assert min(iou(mask / 255.0, scene(5 + k)[2]) for k, mask in enumerate(rest)) >= 0.9, anchor
    out = tmp_path / "out.mkv"
    assert run_cli("inpaint", clip, "-o", out, "--mask", tmp_path / "m12.png", "--mask-frame", 12, "--start", 0.5,
                   "--codec", "ffv1", "--no-progress") == 0
    source, result = frames_of(clip)[5:], frames_of(out)
    assert len(result) == 15
    for k, (before, after) in enumerate(zip(source, result, strict=True)):
        truth = scene(5 + k)[2]
        outside = coverage(truth, dilate=2 + 3, feather=2) == 0  # 3 pixels of slack for the carried mask
        assert np.array_equal(after[outside], before[outside]), k
        assert not np.array_equal(after[truth > 0], before[truth > 0]), k

# --- compositing and flow fill -----------------------------------------------------------------------------------


def test_coverage_dilates_feathers_and_composite_keeps_the_rest_exactly() -> None:
    mask = np.zeros((40, 40), np.float32)
    mask[15:25, 15:25] = 1
    alpha = coverage(mask, dilate=3, feather=4)
    assert alpha[12:28, 15:25].min() == 1.0 and alpha[15:25, 12:28].min() == 1.0  # grown by 3 (a disc)
    ring = alpha[(alpha > 0) & (alpha < 1)]
    assert ring.size and ring.min() > 0  # a soft edge beyond
    assert alpha[:5].max() == 0 and alpha[:, 36:].max() == 0
    rng = np.random.default_rng(0)
    source, other = (rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2))
    out = composite(source, other, alpha)
    assert np.array_equal(out[alpha == 0], source[alpha == 0])
    assert np.array_equal(out[alpha == 1], other[alpha == 1])
    middle = (alpha > 0.3) & (alpha < 0.7)
    assert not np.array_equal(out[middle], source[middle]) and not np.array_equal(out[middle], other[middle])


def test_flow_fill_recovers_the_background_other_frames_show() -> None:
    count = 16
    items = []
    for index in range(count):
        image, _, mask = scene(index)
        items.append((Frame(image, index), coverage(mask, dilate=1) > 0))
    window = FillWindow(radius=6)
    errors_flow, errors_telea = [], []
    for frame, filled, missing in window.process(iter(items)):
        hole = items[frame.index][1]
        clean = scene(frame.index)[1]
        assert np.array_equal(filled[~hole], frame.image[~hole])
        result = telea(filled, missing)
        errors_flow.append(np.abs(result[hole].astype(int) - clean[hole]).mean())
        errors_telea.append(np.abs(telea(frame.image, hole)[hole].astype(int) - clean[hole]).mean())
    assert window.filled_pixels >= 0.95 * window.hole_pixels  # the square moves: the background shows elsewhere
    assert np.mean(errors_flow) < 0.5 * np.mean(errors_telea)
    assert np.mean(errors_flow) < 4


# --- v2v inpaint without a model ---------------------------------------------------------------------------------


def test_inpaint_removes_the_object_and_keeps_every_other_pixel(tmp_path: Path) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 14)
    out = tmp_path / "out.mkv"
    assert run_cli("inpaint", clip, "-o", out, "--mask", write_mask(tmp_path / "m.png", scene(0)[2]), "--dilate", 2,
                   "--feather", 2, "--codec", "ffv1", "--no-progress") == 0
    source, result = frames_of(clip), frames_of(out)
    assert len(result) == 14
    for index, (before, after) in enumerate(zip(source, result, strict=True)):
        truth = scene(index)[2]
        outside = coverage(truth, dilate=2 + 3, feather=2) == 0  # 3 pixels of slack for the carried mask
        assert np.array_equal(after[outside], before[outside]), index
        inside = truth > 0
        clean = scene(index)[1]
        assert np.abs(after[inside].astype(int) - clean[inside]).mean() < 6, index
        assert np.abs(before[inside].astype(int) - clean[inside]).mean() > 30


def test_all_black_mask_copies_the_clip_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 6)
    black = write_mask(tmp_path / "black.png", np.zeros((HEIGHT, WIDTH), np.float32))
    out = tmp_path / "out.mkv"
    assert run_cli("inpaint", clip, "-o", out, "--mask", black, "--codec", "ffv1", "--no-progress") == 0
    assert all(np.array_equal(a, b) for a, b in zip(frames_of(clip), frames_of(tmp_path / "out.mkv"), strict=True))
    assert "black on every frame" in capsys.readouterr().err


def test_mask_video_by_time_and_the_length_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 10)
    masks = tmp_path / "masks"
    masks.mkdir()
    for index in range(6):  # shorter than the clip
        write_mask(masks / f"{index:03d}.png", scene(index)[2])
    out = tmp_path / "out.mkv"
    code = run_cli("inpaint", clip, "-o", out, "--mask", masks / "%03d.png", "--no-progress")
    error = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert error.count("\n") == 1 and "6 frames" in error and "10" in error and "--mask-length hold" in error
    assert run_cli("inpaint", clip, "-o", out, "--mask", masks / "%03d.png", "--mask-length", "hold", "--codec",
                   "ffv1", "--no-progress", "--dilate", "0", "--feather", "0") == 0
    assert "last image is held" in capsys.readouterr().err
    source, result = frames_of(clip), frames_of(out)
    held = scene(5)[2] == 0
    assert np.array_equal(result[9][held], source[9][held])  # frame 9 used mask 5
    assert not np.array_equal(result[9][~held], source[9][~held])


def test_mask_of_another_size_is_resized_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 4)
    big = cv2.resize(scene(0)[2], (WIDTH * 2, HEIGHT * 2), interpolation=cv2.INTER_NEAREST)
    assert run_cli("mask", clip, "--mask", write_mask(tmp_path / "m.png", big), "-o", tmp_path / "m/%03d.png",
                   "--no-progress") == 0
    assert "resized to the video's 128x96" in capsys.readouterr().err
    first = cv2.imread(str(tmp_path / "m/001.png"), cv2.IMREAD_GRAYSCALE) / 255.0
    assert iou(first, scene(0)[2]) > 0.95


@pytest.mark.parametrize("case", ["not-a-mask", "mask-frame-outside", "negative-dilate", "negative-feather",
                                  "prompt-without-model"])
def test_bad_input_is_one_line_and_writes_nothing(case: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_scene(tmp_path / "clip.mkv", 5)
    mask = write_mask(tmp_path / "m.png", scene(0)[2])
    out = tmp_path / "out.mkv"
    extra: list[object] = []
    if case == "not-a-mask":
        mask = tmp_path / "notes.txt"
        mask.write_text("not a mask")
    elif case == "mask-frame-outside":
        extra = ["--mask-frame", 5]
    elif case == "negative-dilate":
        extra = ["--dilate", -1]
    elif case == "negative-feather":
        extra = ["--feather", -2]
    else:
        extra = ["--prompt", "a cat"]
    try:
        code = run_cli("inpaint", clip, "-o", out, "--mask", mask, "--no-progress", *extra)
    except SystemExit as exit_:  # argparse's refusals
        code = int(exit_.code or 0)
    error = capsys.readouterr().err
    assert code in (1, 2) and not out.exists()
    assert error.count("\n") == 1, error
    words = {"not-a-mask": "neither an image nor a video", "mask-frame-outside": "outside the clip",
             "negative-dilate": ">= 0", "negative-feather": ">= 0", "prompt-without-model": "--model"}[case]
    assert words in error


@pytest.mark.parametrize("how", ["resume", "ray"])
def test_segmented_runs_equal_a_single_pass_and_keep_audio(how: str, request, tmp_path: Path) -> None:
    """`--resume` in 1 s segments, and `--backend ray` (two workers): flow fill without a model, the mask carried from
    one image (written to a folder the workers read, removed after), lossless output equal to a single pass, audio
    kept."""
    clip = write_clip(tmp_path / "clip.mp4", frames=30, width=64, height=48, fps=10, audio=True,
                      options={"g": "10", "keyint_min": "10", "sc_threshold": "0"})
    box = np.zeros((48, 64), np.float32)
    box[12:20, 0:8] = 1  # conftest's moving_pattern: an 8x8 white box 3 pixels a frame to the right
    mask = write_mask(tmp_path / "m.png", box)
    common = ["--mask", mask, "--codec", "libx264rgb", "--crf", "0", "--preset", "ultrafast", "--no-progress",
              "--fill-radius", "3"]
    segmented = ["--resume"] if how == "resume" else ["--backend", "ray", "--workers", 2]
    if how == "ray":
        request.getfixturevalue("local_ray")
    assert run_cli("inpaint", clip, "-o", tmp_path / "single.mp4", *common) == 0
    assert run_cli("inpaint", clip, "-o", tmp_path / "parts.mp4", *common, *segmented, "--segment-seconds", 1) == 0
    single, parts = frames_of(tmp_path / "single.mp4"), frames_of(tmp_path / "parts.mp4")
    assert len(single) == len(parts) == 30
    assert all(np.array_equal(a, b) for a, b in zip(single, parts, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(single, frames_of(clip), strict=True))  # it did inpaint
    with av.open(str(tmp_path / "parts.mp4")) as container:
        assert container.streams.audio
    assert not list(tmp_path.glob(".*v2v-mask*"))
