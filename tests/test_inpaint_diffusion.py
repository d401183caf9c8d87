"""Inpainting with diffusion families (issue 13), on tiny random models built from config, saved with
save_pretrained and loaded through the user's path: lossless outside the mask, different inside, all-black and
all-white masks, `--temporal off` = the family's own inpaint pipeline per frame, a plain model refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from conftest import moving_pattern  # noqa: E402

from v2v.errors import ModelError  # noqa: E402
from v2v.frames import Frame, images_to_tensor, tensor_to_images  # noqa: E402
from v2v.inpaint.composite import coverage  # noqa: E402
from v2v.inpaint.stage import InpaintConfig, InpaintPainter, InpaintStage  # noqa: E402

WIDTH, HEIGHT = 64, 48


one_thread = tiny_diffusion.one_thread  # one torch thread (autouse)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_inpaint import shared_tiny_inpaint

    return shared_tiny_inpaint(tmp_path_factory)


class Masks:
    """A MaskSource giving one fixed mask to every frame."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask

    def mask_for(self, frame: Frame) -> np.ndarray:
        return self.mask

    def close(self) -> None:
        pass


def box_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    mask[12:36, 16:48] = 1
    return mask


def clip(count: int = 3) -> list[Frame]:
    return [Frame(moving_pattern(index, WIDTH, HEIGHT), index) for index in range(count)]


def painter(tiny: Path, family: str, **overrides: object) -> InpaintPainter:
    values: dict[str, object] = dict(model=str(tiny / family), prompt="a red cat", steps=3, seed=5, temporal=False)
    values.update(overrides)
    return InpaintPainter(InpaintConfig(**values))  # type: ignore[arg-type]


def run_stage(stage: InpaintStage, frames: list[Frame]) -> list[np.ndarray]:
    return [frame.image for frame in stage.process(iter(frames))]


@pytest.mark.parametrize("family", ["sd-inpaint", "sdxl-inpaint", "flux-fill"])
def test_outside_the_mask_is_the_source_exactly_inside_it_differs(tiny: Path, family: str) -> None:
    frames, mask = clip(2), box_mask()
    stage = InpaintStage(Masks(mask), dilate=1, feather=2, fill=False, painter=painter(tiny, family))
    out = run_stage(stage, frames)
    alpha = coverage(mask, 1, 2)
    for frame, image in zip(frames, out, strict=True):
        assert np.array_equal(image[alpha == 0], frame.image[alpha == 0])
        inside = mask > 0
        assert np.abs(image[inside].astype(int) - frame.image[inside]).mean() > 5


@pytest.mark.parametrize("family", ["sd-inpaint", "flux-fill"])
def test_temporal_off_equals_the_familys_own_pipeline_per_frame(tiny: Path, family: str) -> None:
    import diffusers

    frames, mask = clip(2), box_mask()
    made = painter(tiny, family)
    out = run_stage(InpaintStage(Masks(mask), fill=False, painter=made), frames)
    cls = getattr(diffusers, made.stage.family.pipelines["inpaint"])
    pipe = cls.from_pretrained(str(tiny / family))
    pipe.set_progress_bar_config(disable=True)
    config = made.config
    inside = mask > 0
    for frame, image in zip(frames, out, strict=True):
        arguments = dict(prompt=config.prompt, image=images_to_tensor([frame.image]),
                         mask_image=torch.from_numpy(mask)[None, None], height=HEIGHT, width=WIDTH,
                         strength=config.strength, num_inference_steps=config.steps, guidance_scale=config.guidance,
                         generator=torch.Generator("cpu").manual_seed(config.seed + frame.index), output_type="pt")
        if family == "flux-fill":
            arguments["max_sequence_length"] = made.stage.family.text_tokens(made.stage.pipe)
        with torch.inference_mode():
            theirs = tensor_to_images(pipe(**arguments).images)[0]
        assert np.array_equal(image[inside], theirs[inside])


def test_all_white_mask_edits_everything_and_all_black_copies(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = clip(2)
    made = painter(tiny, "sd-inpaint")
    white = run_stage(InpaintStage(Masks(np.ones((HEIGHT, WIDTH), np.float32)), fill=False, painter=made), frames)
    for frame, image in zip(frames, white, strict=True):
        assert (np.abs(image.astype(int) - frame.image).max(axis=2) > 0).mean() > 0.9
    black = run_stage(InpaintStage(Masks(np.zeros((HEIGHT, WIDTH), np.float32)), painter=made), frames)
    assert all(np.array_equal(a, b.image) for a, b in zip(black, frames, strict=True))
    assert "black on every frame" in caplog.text


def test_without_a_prompt_the_model_paints_only_what_no_frame_shows(tiny: Path) -> None:
    frames, mask = clip(3), box_mask()
    made = painter(tiny, "sd-inpaint", prompt="")
    stage = InpaintStage(Masks(mask), fill=True, radius=1, painter=made)
    out = run_stage(stage, frames)
    assert stage.fill_window is not None
    # the mask stays put in every frame: no other frame shows what is under it (but for its very edge, where the
    # completed flow of the moving pattern reaches past it), so the model paints nearly all of it
    window = stage.fill_window
    assert window.filled_pixels < 0.05 * window.hole_pixels
    alpha, inside = coverage(mask), mask > 0
    for image, frame in zip(out, frames, strict=True):
        assert np.array_equal(image[alpha == 0], frame.image[alpha == 0])
        assert np.abs(image[inside].astype(int) - frame.image[inside]).mean() > 5


def test_a_plain_model_is_refused_naming_the_familys_inpaint_models(tiny: Path) -> None:
    with pytest.raises(ModelError, match="stable-diffusion-inpainting") as caught:
        painter(tiny, "sd")
    assert "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="stable-diffusion-xl-1.0-inpainting"):
        painter(tiny, "sdxl")


def test_each_inpaint_folder_is_its_familys(tiny: Path) -> None:
    from v2v.diffusion.registry import detect

    assert {name: detect(str(tiny / name))[0].name for name in ("sd-inpaint", "sdxl-inpaint", "flux-fill")} == {
        "sd-inpaint": "sd-inpaint", "sdxl-inpaint": "sdxl-inpaint", "flux-fill": "flux-fill"}


def test_an_inpaint_model_given_to_restyle_points_to_inpaint(tiny: Path) -> None:
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage
    from v2v.errors import UsageError

    with pytest.raises(UsageError, match="v2v inpaint"):
        RestyleStage(RestyleConfig(model=str(tiny / "sd-inpaint"), prompt="x", steps=2))


def test_controlnet_inpaint_holds_the_paint_and_keeps_the_rest(tiny: Path) -> None:
    """SD inpainting with a ControlNet (StableDiffusionControlNetInpaintPipeline): a ControlNet of 4 latent channels
    beside the 9-channel UNet, as control_v11p_sd15_inpaint is."""
    frames, mask = clip(2), box_mask()
    held = painter(tiny, "sd-inpaint", controlnets=[str(tiny / "controlnet")], controls=["canny"])
    assert held.stage.kind == "inpaint+controlnet"
    out = run_stage(InpaintStage(Masks(mask), fill=False, painter=held), frames)
    free = run_stage(InpaintStage(Masks(mask), fill=False, painter=painter(tiny, "sd-inpaint")), frames)
    inside = mask > 0
    for image, other, frame in zip(out, free, frames, strict=True):
        assert np.array_equal(image[~inside], frame.image[~inside])
        assert np.abs(image[inside].astype(int) - other[inside]).mean() > 1


def test_inpainting_controlnet_gets_the_frame_with_the_mask_at_minus_one(tiny: Path, tmp_path: Path) -> None:
    """An inpainting ControlNet (its name says inpaint, as control_v11p_sd15_inpaint's does) is conditioned on the
    frame with the mask's pixels at -1 without being told, and `--temporal off` then equals diffusers'
    StableDiffusionControlNetInpaintPipeline per frame given that map; `--control inpaint` asks for it by name."""
    import diffusers

    from v2v.diffusion.config import RestyleConfig
    from v2v.errors import UsageError

    named = tmp_path / "controlnet-inpaint"
    named.symlink_to(tiny / "controlnet", target_is_directory=True)
    frames, mask = clip(2), box_mask()
    made = painter(tiny, "sd-inpaint", controlnets=[str(named)])
    assert made.stage.kind == "inpaint+controlnet" and made.config.control_kinds == ["inpaint"]
    out = run_stage(InpaintStage(Masks(mask), fill=False, painter=made), frames)
    asked = painter(tiny, "sd-inpaint", controlnets=[str(tiny / "controlnet")], controls=["inpaint"])
    again = run_stage(InpaintStage(Masks(mask), fill=False, painter=asked), frames)
    assert all(np.array_equal(a, b) for a, b in zip(again, out, strict=True))
    canny = painter(tiny, "sd-inpaint", controlnets=[str(tiny / "controlnet")])
    edges = run_stage(InpaintStage(Masks(mask), fill=False, painter=canny), frames)
    inside = mask > 0
    # the map reaches the model (a tiny random ControlNet follows its condition only a little: ~0.1 levels here)
    assert not any(np.array_equal(a[inside], b[inside]) for a, b in zip(out, edges, strict=True))
    controlnet = diffusers.ControlNetModel.from_pretrained(str(tiny / "controlnet"))
    pipe = diffusers.StableDiffusionControlNetInpaintPipeline.from_pretrained(str(tiny / "sd-inpaint"),
                                                                             controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    config = made.config
    for frame, image in zip(frames, out, strict=True):
        condition = images_to_tensor([frame.image])
        condition[:, :, torch.from_numpy(inside)] = -1.0  # the model card's make_inpaint_condition
        with torch.inference_mode():
            theirs = pipe(prompt=config.prompt, image=images_to_tensor([frame.image]),
                          mask_image=torch.from_numpy(mask)[None, None], control_image=condition, height=HEIGHT,
                          width=WIDTH, strength=config.strength, num_inference_steps=config.steps,
                          guidance_scale=config.guidance, controlnet_conditioning_scale=1.0, output_type="pt",
                          generator=torch.Generator("cpu").manual_seed(config.seed + frame.index)).images
        assert np.array_equal(image[inside], tensor_to_images(theirs)[0][inside])
    with pytest.raises(UsageError, match="v2v inpaint"):
        RestyleConfig(model="m", prompt="x", controlnets=["c"], controls=["inpaint"]).check()

def test_cli_inpaints_with_a_model_and_refuses_a_plain_one_in_one_line(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2
    from conftest import write_clip

    from v2v import cli
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "clip.mp4", frames=4, width=WIDTH, height=HEIGHT, audio=True)
    mask_path = tmp_path / "m.png"
    cv2.imwrite(str(mask_path), (box_mask() * 255).astype(np.uint8))
    out = tmp_path / "out.mp4"
    common = ["inpaint", str(source), "--mask", str(mask_path), "--prompt", "a red cat", "--steps", "2",
              "--no-progress", "--codec", "libx264rgb", "--crf", "0", "--dilate", "0", "--feather", "0"]
    assert cli.main([*common, "-o", str(out), "--model", str(tiny / "sd-inpaint")]) == 0
    with open_source(source) as reader, open_source(out) as written:
        pairs = list(zip(reader, written, strict=True))
    assert len(pairs) == 4
    outside = box_mask() == 0
    for before, after in pairs:
        assert np.array_equal(after.image[outside], before.image[outside])
        assert not np.array_equal(after.image[~outside], before.image[~outside])
    capsys.readouterr()
    refused = tmp_path / "refused.mp4"
    assert cli.main([*common, "-o", str(refused), "--model", str(tiny / "sd")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "stable-diffusion-inpainting" in error and not refused.exists()
