"""The `wan_vace` family (`v2v/diffusion/families/wan_vace.py`) with a tiny random Wan VACE built from config
(`tests/tiny_video.py`): a clip that fits one window equals `WanVACEPipeline` called directly with the same context
video, mask, reference image and noise, pixel for pixel; windows continue VACE's way (mask 0 over the overlap with
the previous window's latents in place); the commands and their one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_video  # noqa: E402
from conftest import write_clip  # noqa: E402
from test_video_models import as_frames, noisy_frames  # noqa: E402
from tiny_diffusion import one_thread  # noqa: E402, F401 (an autouse fixture)

from v2v.diffusion.config import RestyleConfig  # noqa: E402
from v2v.diffusion.video_stage import VideoModelStage  # noqa: E402
from v2v.frames import tensor_to_images  # noqa: E402

vace_folder = tiny_video.tiny_wan_vace  # the tiny Wan VACE pipeline folder, a session fixture
wan_folder = tiny_video.tiny_wan

STEPS, GUIDANCE, SCALE = 2, 5.0, 0.7


def vace_stage(folder: Path, **options: object) -> VideoModelStage:
    config = RestyleConfig(model=str(folder), prompt="a cat", steps=STEPS, guidance=GUIDANCE, window=9,
                           window_overlap=4, control_scales=[SCALE], **options)  # type: ignore[arg-type]  # fmt: skip
    return VideoModelStage(config)


@pytest.fixture(scope="module")
def stage(vace_folder: Path) -> VideoModelStage:
    return vace_stage(vace_folder)


def pipeline_output(stage: VideoModelStage, images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch,
                    noise: torch.Tensor, **inputs: object) -> list[np.ndarray]:  # fmt: skip
    """`WanVACEPipeline` called directly on `images` as the context video, with `noise` as its latents' noise."""
    import diffusers.pipelines.wan.pipeline_wan_vace as vace

    monkeypatch.setattr(vace, "randn_tensor", lambda shape, generator=None, device=None, dtype=None, layout=None:
                        noise.to(device, dtype))  # fmt: skip
    height, width = images[0].shape[:2]
    out = stage.pipe(video=[Image.fromarray(image) for image in images], prompt="a cat", height=height, width=width,
                     num_frames=len(images), num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     conditioning_scale=SCALE, output_type="pt", max_sequence_length=16,
                     **inputs).frames[0]  # fmt: skip
    return tensor_to_images(out)


def test_one_window_is_the_vace_pipeline_pixel_for_pixel(stage: VideoModelStage,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """No control, no mask: the source frames are the context video; 9 frames (one window of 3 latent frames) equal
    `WanVACEPipeline(video=frames)` with the same prompt, settings and noise."""
    images = noisy_frames(9)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    theirs = pipeline_output(stage, images, monkeypatch, stage.noise(0, 0, (1, 16, 3, 6, 8)))
    assert len(ours) == len(theirs) == 9
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not np.array_equal(ours[4], images[4])  # the model did something


def vace_command(folder: Path, source: Path, output: Path, *more: str) -> list[str]:
    return ["restyle", str(source), "-o", str(output), "--model", str(folder), "--prompt", "a cat", "--steps",
            str(STEPS), "--window", "9", "--window-overlap", "4", "--no-progress", *more]  # fmt: skip


def test_restyle_with_no_control_runs_over_windows(vace_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`v2v restyle --model <VACE> --prompt P` with nothing else: 14 frames at 72x40 (two windows, sizes padded
    inside), the source as context video, logged; every frame out at the source's size."""
    from v2v.cli import main
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "in.mp4", frames=14, width=72, height=40)
    assert main(vace_command(vace_folder, source, tmp_path / "out.mp4", "-v")) == 0
    assert "Wan VACE: the source frames are the context video" in capsys.readouterr().err
    with open_source(tmp_path / "out.mp4") as reader:
        shapes = [frame.image.shape for frame in reader]
    assert shapes == [(40, 72, 3)] * 14


def test_one_window_with_a_reference_image_is_the_pipeline(vace_folder: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`--reference IMG` (a 40x24 picture, fitted into the frame's white canvas) equals the pipeline's
    `reference_images=[IMG]`, its latent frame's noise drawn first, pixel for pixel."""
    from v2v.diffusion.video_stage import noise_seed

    reference = tmp_path / "ref.png"
    Image.fromarray(noisy_frames(1, width=40, height=24, seed=3)[0]).save(reference)
    stage = vace_stage(vace_folder, reference=str(reference))
    images = noisy_frames(9)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    generator = torch.Generator("cpu").manual_seed(noise_seed(0, 0xFFFFFFFF))
    noise = torch.cat([torch.randn((1, 16, 1, 6, 8), generator=generator), stage.noise(0, 0, (1, 16, 3, 6, 8))], 2)
    theirs = pipeline_output(stage, images, monkeypatch, noise, reference_images=[Image.open(reference)])
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    plain = pipeline_output(stage, images, monkeypatch, noise[:, :, 1:])
    assert not all(np.array_equal(a, b) for a, b in zip(ours, plain, strict=True))  # the reference did something


def test_the_overlap_is_kept_with_mask_0_and_the_previous_latents(stage: VideoModelStage,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Windows continue VACE's way: over the overlap the context's inactive half is the previous window's final
    latents and its mask is 0; elsewhere the mask is the whole frame's (1). 17 frames, windows of 9 overlapping by 4:
    two windows of 3 latent frames, the second holding 1."""
    from v2v.diffusion.families.wan_vace import WanVace

    seen: list[tuple[torch.Tensor | None, torch.Tensor]] = []
    original = WanVace.context

    def recording(self: WanVace, pipe: object, clean: torch.Tensor, hold: torch.Tensor | None,
                  conditions: dict[str, object]) -> torch.Tensor:  # fmt: skip
        context = original(self, pipe, clean, hold, conditions)
        seen.append((None if hold is None else hold.clone(), context))
        return context

    monkeypatch.setattr(WanVace, "context", recording)
    list(stage.process(iter(as_frames(noisy_frames(17)))))
    assert [None if hold is None else hold.shape[2] for hold, _ in seen] == [None, 1]
    first = seen[0][1]
    assert torch.all(first[:, 32:] == 1)
    for hold, context in seen[1:]:
        assert torch.equal(context[:, :16, :1], hold.to(context.dtype))
        assert torch.all(context[:, 32:, :1] == 0) and torch.all(context[:, 32:, 1:] == 1)


class BoxMask:
    """A mask source: a box, moving right a pixel a frame (1 inside: paint)."""

    def mask_for(self, frame: object) -> np.ndarray:
        mask = np.zeros((48, 64), np.float32)
        index = frame.index  # type: ignore[attr-defined]
        mask[8:32, 16 + index : 40 + index] = 1
        return mask

    def close(self) -> None:
        pass


def test_one_window_inpainted_is_the_pipeline_given_the_same_mask(vace_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`v2v inpaint`'s stage with a VACE model: inside the mask the frames equal `WanVACEPipeline(video, mask)`, pixel
    for pixel; outside it they are the source's."""
    from v2v.diffusion.video_stage import VideoPainter
    from v2v.inpaint.stage import InpaintConfig, InpaintStage

    config = InpaintConfig(model=str(vace_folder), prompt="a cat", steps=STEPS, guidance=GUIDANCE, window=9,
                           window_overlap=4, control_scales=[SCALE])  # fmt: skip
    painter = VideoPainter(config)
    images = noisy_frames(9)
    stage = InpaintStage(BoxMask(), dilate=0, feather=0, fill=False, painter=painter)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    masks = [BoxMask().mask_for(frame) for frame in as_frames(images)]
    pictures = [Image.fromarray(np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)) for mask in masks]
    theirs = pipeline_output(painter.stage, images, monkeypatch, painter.stage.noise(0, 0, (1, 16, 3, 6, 8)),
                             mask=pictures)  # fmt: skip
    for mine, pipeline, source, mask in zip(ours, theirs, images, masks, strict=True):
        inside = mask > 0
        assert np.array_equal(mine[inside], pipeline[inside]) and np.array_equal(mine[~inside], source[~inside])
    plain = pipeline_output(painter.stage, images, monkeypatch, painter.stage.noise(0, 0, (1, 16, 3, 6, 8)))
    assert not np.array_equal(theirs[4], plain[4])  # the mask changed what the model made


def test_inpaint_command_takes_a_mask_video(vace_folder: Path, tmp_path: Path) -> None:
    """`v2v inpaint --model <VACE> --mask VIDEO --prompt P` runs (two windows)."""
    from v2v.cli import main
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "in.mp4", frames=14)
    output = tmp_path / "out.mp4"
    command = ["inpaint", str(source), "-o", str(output), "--mask", str(source), "--model", str(vace_folder),
               "--prompt", "a cat", "--steps", str(STEPS), "--window", "9", "--window-overlap", "4", "--no-progress"]
    assert main(command) == 0
    with open_source(output) as reader:
        assert len(list(reader)) == 14


def test_one_window_with_a_control_is_the_pipeline_given_its_maps(vace_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`--control canny` (no ControlNet): the canny maps of the frames are the context video; one window equals the
    pipeline given those maps as `video`."""
    from v2v.diffusion.control import canny
    from v2v.frames import images_to_tensor

    stage = vace_stage(vace_folder, controls=["canny"])
    images = noisy_frames(9)
    for index, image in enumerate(images):  # a sharp box for the edges
        image[10:30, 12 + index : 36 + index] = 255
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    maps = [tensor_to_images(canny(images_to_tensor([image], "cpu", torch.float32)))[0] for image in images]
    assert any(m.any() for m in maps) and not np.array_equal(maps[0], images[0])
    theirs = pipeline_output(stage, maps, monkeypatch, stage.noise(0, 0, (1, 16, 3, 6, 8)))
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("model, arguments, says", [
    ("vace", ["--strength", "0.5"], "--strength means nothing for Wan VACE"),
    ("vace", ["--reference", "missing.png"], "reference image missing.png not found"),
    ("vace", ["--control", "canny", "--control", "tile"], "2 --control but no --controlnet"),
    ("wan", ["--control", "canny"], "Wan video-to-video models take no --control"),
    ("wan", ["--reference", "ref.png"], "take no reference image; drop --reference"),
])  # fmt: skip
def test_bad_vace_options_are_one_line(vace_folder: Path, wan_folder: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str], model: str, arguments: list[str],
                                       says: str) -> None:  # fmt: skip
    from v2v.cli import main

    source = write_clip(tmp_path / "in.mp4", frames=3)
    folder = vace_folder if model == "vace" else wan_folder
    command = ["restyle", str(source), "-o", str(tmp_path / "o.mp4"), "--model", str(folder), "--prompt", "p",
               *arguments]  # fmt: skip
    assert main(command) in (1, 2)
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and says in error[0], error


def test_a_run_resumed_from_a_window_state_gives_the_same_frames(stage: VideoModelStage, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """With a state folder, a run handed frames from 5 on (where the first window's state stands: both context
    encoders' caches, the held latents) gives the uninterrupted run's frames 5.. exactly."""
    monkeypatch.setattr(stage, "state_dir", tmp_path)
    frames = as_frames(noisy_frames(17))
    whole = [frame.image for frame in stage.process(iter(frames))]
    states = sorted(path.name for path in tmp_path.glob("window-*.pt"))
    assert states == ["window-000000005.pt", "window-000000013.pt"], states
    (tmp_path / states[1]).unlink()  # so the run continues from the first window's state
    resumed = [frame.image for frame in stage.process(iter(frames[5:]))]
    assert len(resumed) == 12 and all(np.array_equal(a, b) for a, b in zip(whole[5:], resumed, strict=True))
