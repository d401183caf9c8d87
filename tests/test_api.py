"""The package as a library: exported names, lazy imports, typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import v2v


def test_every_exported_name_imports() -> None:
    for name in v2v.__all__:
        assert getattr(v2v, name) is not None, name
    assert v2v.Encoding().codec == "libx264"
    assert issubclass(v2v.InputError, v2v.V2VError) and issubclass(v2v.UsageError, ValueError)
    for stage in ("MapStage", "UpscaleStage", "VideoSRStage", "StabilizeStage", "RestyleStage", "EditStage",
                  "InterpolateStage", "DenoiseStage", "InpaintStage", "StylizeStage", "TranslateStage"):
        assert hasattr(getattr(v2v, stage), "process"), stage


def test_the_new_exports_are_the_modules_own() -> None:
    from v2v.diffusion.config import EditConfig
    from v2v.diffusion.stage import EditStage
    from v2v.restore.rife import Interpolator
    from v2v.restore.video_sr import VideoSRStage
    from v2v.segments import run_segmented

    assert (v2v.EditStage, v2v.EditConfig, v2v.VideoSRStage, v2v.Interpolator, v2v.run_segmented) == (
        EditStage, EditConfig, VideoSRStage, Interpolator, run_segmented)


def test_an_error_names_the_python_parameter() -> None:
    import pickle

    # the same error the CLI gives as "--flow-scale must be ..." (tests/test_cli.py)
    with pytest.raises(v2v.ParameterError) as caught:
        v2v.InterpolateStage(factor=2, flow_scale=3)
    assert one_line(caught.value) == "flow_scale must be auto or one of 0.25, 0.5, 1, 2, 4, got 3"
    assert isinstance(caught.value, v2v.UsageError) and caught.value.parameter == "flow_scale"
    with pytest.raises(v2v.ParameterError, match=r"^fusion must be in \[0, 1\], got 2") as fusion:
        v2v.FusionConfig(fusion=2)
    again = pickle.loads(pickle.dumps(fusion.value))  # as a Ray worker's error reaches the driver
    assert (str(again), again.parameter, again.problem) == (str(fusion.value), "fusion", "must be in [0, 1], got 2")


def test_a_message_naming_several_parameters_names_them_in_python() -> None:
    import pickle

    # the same error the CLI gives with flags (tests/test_cli.py)
    with pytest.raises(v2v.UsageError) as caught:
        v2v.RestyleConfig(model="any", true_cfg=4.0).check()
    said = "true_cfg does nothing without negative_prompt (its second pass reads that prompt)"
    assert str(caught.value) == said and caught.value.template == (
        "{true_cfg} does nothing without {negative_prompt} (its second pass reads that prompt)")
    again = pickle.loads(pickle.dumps(caught.value))  # as a Ray worker's error reaches the driver
    assert type(again) is v2v.UsageError and (str(again), again.template) == (said, caught.value.template)
    assert again.message(lambda name: name.upper()) == (
        "TRUE_CFG does nothing without NEGATIVE_PROMPT (its second pass reads that prompt)")


def test_values_in_a_named_message_are_never_read_as_fields() -> None:
    import pickle

    error = v2v.OutputExistsError.naming("{path}: exists already; pass {overwrite} to replace it", path="a{b}/{0}.mp4")
    assert str(error) == "a{b}/{0}.mp4: exists already; pass overwrite to replace it"
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, FileExistsError) and again.values == {"path": "a{b}/{0}.mp4"}
    assert again.message(lambda name: "--" + name) == "a{b}/{0}.mp4: exists already; pass --overwrite to replace it"


def test_run_needs_stages_and_an_output() -> None:
    with pytest.raises(TypeError, match="output"):
        v2v.run("in.mp4", [])  # refused before anything is opened
    with pytest.raises(TypeError, match="stages"):
        v2v.run("in.mp4", output="out.mp4")  # no stages is `[]`, said so


def test_open_is_an_attribute_but_does_not_shadow_the_builtin() -> None:
    assert v2v.open is v2v.open_source
    assert "open" not in v2v.__all__
    namespace: dict[str, object] = {}
    exec("from v2v import *", namespace)
    assert "open" not in namespace and "Encoding" in namespace
    assert "open" in dir(v2v)
    with pytest.raises(AttributeError):
        v2v.no_such_name  # noqa: B018


def test_version_imports_neither_av_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from v2v.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as done:\n    assert done.code == 0\n"
        "print(sorted(m for m in ('av', 'torch', 'numpy', 'PIL', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [f"v2v {v2v.__version__}", "[]"]


def test_ships_the_typing_marker() -> None:
    package = Path(v2v.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = (package.parent / "pyproject.toml").read_text()
    assert 'v2v = ["py.typed"]' in pyproject


def one_line(error: BaseException) -> str:
    text = str(error)
    assert isinstance(error, v2v.V2VError) and text and "\n" not in text, repr(error)
    return text


def test_review_found_errors_are_v2v_errors_with_one_line(tmp_path: Path) -> None:
    import numpy as np
    from conftest import write_clip

    from v2v.diffusion.keyframes import KeyframeWindow
    from v2v.flow import make_flow_estimator
    from v2v.metrics import score_video

    # the writer: a frame size that changes mid-stream; nothing is left behind
    clip = write_clip(tmp_path / "c.mp4", frames=6)
    sizes = iter([False, False, True])

    def change(image: np.ndarray) -> np.ndarray:
        return np.pad(image, ((0, 2), (0, 2), (0, 0))) if next(sizes, True) else image

    grow = v2v.MapStage(change)
    with pytest.raises(v2v.InputError) as caught:
        v2v.run(clip, [grow], tmp_path / "o.mp4", progress=False)
    assert "66x50" in one_line(caught.value) and not (tmp_path / "o.mp4").exists()
    # metrics: clips of different lengths
    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    with pytest.raises(v2v.InputError) as caught:
        score_video(frames, frames[:2], make_flow_estimator("dis"))
    assert "ends after 2 frames" in one_line(caught.value)
    # the fusion config and the keyframe window (UsageError is still a ValueError for old callers)
    for settings in ({"fusion": 2.0}, {"low_rate": 0.0}, {"lookahead": -1}):
        with pytest.raises(v2v.UsageError) as caught:
            v2v.FusionConfig(**settings)
        one_line(caught.value)
    with pytest.raises(v2v.UsageError) as caught:
        KeyframeWindow(1, lambda frame: frame.image, make_flow_estimator("dis"))
    assert isinstance(caught.value, ValueError) and "keyframe interval" in one_line(caught.value)


@pytest.mark.parametrize(("module", "name"),
                         [("v2v.diffusion.control", "DepthMaps"), ("v2v.diffusion.pose", "PoseMaps")])
def test_a_model_error_without_a_message_is_still_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           module: str, name: str) -> None:
    import importlib

    import torch
    import transformers

    def refuse(*args: object, **kwargs: object) -> None:
        raise KeyError()  # transformers raises bare KeyErrors for some broken configs

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", refuse)
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(v2v.ModelError) as caught:
        cls(str(tmp_path), "cpu", torch.float32)
    assert "KeyError" in one_line(caught.value)
