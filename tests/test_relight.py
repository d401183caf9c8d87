"""`v2v relight`: IC-Light offsets on a tiny random SD 1.5, made in the test in IC-Light's own layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from conftest import write_clip  # noqa: E402
from tiny_diffusion import frames, max_diff, translating  # noqa: E402
from tiny_relight import write_ic_light  # noqa: E402

from v2v.errors import InputError, ModelError, UsageError  # noqa: E402

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


@pytest.fixture(scope="module")
def ic_light(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ic-light")
    return {
        "fc": write_ic_light(folder / "fc.safetensors", tiny / "sd" / "unet", 8),
        "fbc": write_ic_light(folder / "fbc.safetensors", tiny / "sd" / "unet", 12),
        "zero": write_ic_light(folder / "zero.safetensors", tiny / "sd" / "unet", 8, zero=True),
        "sdxl": write_ic_light(folder / "sdxl.safetensors", tiny / "sdxl" / "unet", 8),
    }


def relight_config(tiny: Path, ic_light: Path, **overrides: object) -> object:
    from v2v.diffusion.config import RelightConfig

    values: dict[str, object] = dict(model=str(tiny / "sd"), prompt="a lamp", ic_light=str(ic_light), steps=2,
                                     strength=0.75, guidance=5.0, seed=3)  # fmt: skip
    values.update(overrides)
    return RelightConfig(**values)  # type: ignore[arg-type]


def run_frames(stage: object, images: list[np.ndarray]) -> list[np.ndarray]:
    from v2v.frames import Frame

    return [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(images)))]  # type: ignore[attr-defined]


@pytest.mark.parametrize("variant", ["fc", "fbc"])
def test_fc_and_fbc_relight_8_frames_through_the_command(tiny: Path, ic_light: dict[str, Path], tmp_path: Path,
                                                         variant: str) -> None:
    from v2v.cli import main
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "in.mp4", frames=8)
    output = tmp_path / "out.mp4"
    extra = ["--light", "left"]
    if variant == "fbc":  # a background video, read by time; a mask image carried through the clip
        from PIL import Image

        mask = np.zeros((48, 64), np.uint8)
        mask[8:40, 16:48] = 255
        Image.fromarray(mask).save(tmp_path / "mask.png")
        extra = ["--background", str(write_clip(tmp_path / "bg.mp4", frames=8, width=80, height=60)),
                 "--mask", str(tmp_path / "mask.png")]  # fmt: skip
    code = main(["relight", str(source), "-o", str(output), "--model", str(tiny / "sd"), "--ic-light",
                 str(ic_light[variant]), "--prompt", "sunset", "--steps", "2", "--no-progress", *extra])  # fmt: skip
    assert code == 0
    with open_source(output) as reader:
        relit = [f.image for f in reader]
    with open_source(source) as reader:
        original = [f.image for f in reader]
    assert len(relit) == 8 and relit[0].shape == (48, 64, 3)
    assert max_diff(relit, original) > 30  # the frames were relit, not copied


def test_zero_offsets_with_no_light_and_temporal_off_are_diffusers_img2img(tiny: Path,
                                                                          ic_light: dict[str, Path]) -> None:
    """All-zero offsets, new channels zero too: the base's own img2img, pixel for pixel, so the offsets are added and
    the new channels enter (random offsets change the result, below)."""
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    from v2v.diffusion.relight import RelightStage

    config = relight_config(tiny, ic_light["zero"], temporal=False, light="none")
    stage = RelightStage(config)
    ours = [stage.diffuse([image], [index])[0] for index, image in enumerate(frames(2))]
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(tiny / "sd"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    for index, image in enumerate(frames(2)):
        theirs = pipe(prompt="a lamp", image=Image.fromarray(image), strength=0.75, num_inference_steps=2,
                      guidance_scale=5.0, generator=torch.Generator().manual_seed(3 + index), output_type="np",
                      ).images[0]  # fmt: skip
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index
    relit = RelightStage(relight_config(tiny, ic_light["fc"], temporal=False, light="none"))
    assert max_diff([relit.diffuse([frames(1)[0]], [0])[0]], ours[:1]) > 10


def test_temporal_on_halves_the_warping_error(tiny: Path, ic_light: dict[str, Path]) -> None:
    from v2v.diffusion.relight import RelightStage
    from v2v.flow import make_flow_estimator
    from v2v.metrics import score_video

    sources = translating(6, width=96, height=64, step=3)
    errors = {}
    for temporal in (False, True):
        stage = RelightStage(relight_config(tiny, ic_light["fc"], temporal=temporal, light="left", steps=4))
        errors[temporal] = score_video(run_frames(stage, sources), sources, make_flow_estimator("dis")).warping_error
    assert errors[True] <= 0.5 * errors[False], errors


def test_light_fusion_at_weight_zero_changes_nothing_and_a_weight_does(tiny: Path, ic_light: dict[str, Path]) -> None:
    """The estimate-fusion hook with weight 0 leaves the step exactly as it was (x0 and back is exact up to float
    rounding, so compare within a level); with a weight it moves the result."""
    from v2v.diffusion.estimate_fusion import EstimateFusion
    from v2v.diffusion.relight import RelightStage

    config = relight_config(tiny, ic_light["fc"], light="left", fusion=0.0, latent_fusion=0.0, steps=4)
    stage = RelightStage(config)
    off = run_frames(stage, translating(3))
    stage.estimate_fusion = EstimateFusion(stage.pipe, 0.0, stage.device)
    assert max_diff(run_frames(stage, translating(3)), off) <= 1
    stage.estimate_fusion = EstimateFusion(stage.pipe, 0.9, stage.device)
    assert max_diff(run_frames(stage, translating(3)), off) > 1


# --- bad input -------------------------------------------------------------------------------------------------


def test_an_ic_light_file_for_another_base_is_refused_naming_both(tiny: Path, ic_light: dict[str, Path]) -> None:
    from v2v.diffusion.relight import RelightStage

    with pytest.raises(ModelError) as caught:
        RelightStage(relight_config(tiny, ic_light["sdxl"]))
    message = str(caught.value)
    assert "\n" not in message and str(ic_light["sdxl"]) in message and str(tiny / "sd") in message


def test_a_file_that_is_not_ic_light_and_fc_with_a_background_are_refused(tiny: Path, ic_light: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from v2v.diffusion.relight import RelightStage

    save_file({"conv_in.weight": torch.zeros(32, 4, 3, 3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelError, match="not an IC-Light file"):
        RelightStage(relight_config(tiny, tmp_path / "plain.safetensors"))
    with pytest.raises(UsageError, match="fbc"):
        RelightStage(relight_config(tiny, ic_light["fc"], background=str(tmp_path / "bg.png")))


def test_a_background_video_shorter_than_the_clip_is_refused_unless_held(tiny: Path, ic_light: dict[str, Path],
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main
    from v2v.diffusion.relight import check_background

    source = write_clip(tmp_path / "in.mp4", frames=6)
    background = write_clip(tmp_path / "bg.mp4", frames=3)
    with pytest.raises(InputError, match="hold"):
        check_background(str(background), source, "error")
    check_background(str(background), source, "hold")
    command = ["relight", str(source), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny / "sd"), "--ic-light",
               str(ic_light["fbc"]), "--background", str(background), "--steps", "2", "--no-progress"]  # fmt: skip
    assert main(command) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--background-length hold" in error and "internal" not in error
    assert not (tmp_path / "out.mp4").exists()


def test_light_fusion_batch_equals_single_frames(tiny: Path, ic_light: dict[str, Path]) -> None:
    """A batch's frames are fused in order (frame j towards frame j - 1 at the same step), as single frames are."""
    from v2v.diffusion.relight import RelightStage

    config = relight_config(tiny, ic_light["fbc"], light="right", fusion=0.0, latent_fusion=0.0, light_fusion=0.8,
                            steps=4)  # fmt: skip
    single = run_frames(RelightStage(config), translating(5))
    config.batch_size = 2
    assert max_diff(run_frames(RelightStage(config), translating(5)), single) <= 1  # batched matmuls round apart


def test_relight_takes_an_automatic_mask_inline(tiny: Path, ic_light: dict[str, Path], tmp_path: Path) -> None:
    """`--mask auto:person` (issue 26's inline form) is made inside the relight pipeline; the stage then declares
    the automatic mask's inexact context (so such a run is not cut into segments by default)."""
    from v2v.cli import main
    from v2v.commands.relight import RelightFactory
    from v2v.inpaint.spec import MaskSpec
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "in.mp4", frames=4)
    output = tmp_path / "out.mp4"
    code = main(["relight", str(source), "-o", str(output), "--model", str(tiny / "sd"), "--ic-light",
                 str(ic_light["fc"]), "--prompt", "sunset", "--steps", "2", "--light", "left", "--mask", "auto:person",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    with open_source(output) as reader:
        assert len(list(reader)) == 4
    factory = RelightFactory(relight_config(tiny, ic_light["fc"], temporal=False, light="left"),
                             MaskSpec.check("auto:person", str(source)), 0.0)
    stage = factory()[0]
    assert not stage.context.exact
