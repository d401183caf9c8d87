"""The video families besides Wan (`lucy_edit`, `animatediff`, `ltx`) through `VideoModelStage`, with tiny random
models built from config (`tests/tiny_video_families.py`): a clip that fits one window equals the family's own
diffusers pipeline called with the same inputs and noise, pixel for pixel; the family's frame rule and size padding;
options that mean nothing for the family refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from test_video_models import as_frames, noisy_frames  # noqa: E402
from tiny_diffusion import one_thread  # noqa: E402, F401 (an autouse fixture)
from tiny_video_families import build_tiny_ltx, build_tiny_lucy, build_tiny_motion_adapter  # noqa: E402

from v2v.diffusion.config import EditConfig, RestyleConfig  # noqa: E402
from v2v.diffusion.video_stage import VideoModelStage  # noqa: E402
from v2v.errors import V2VError  # noqa: E402
from v2v.frames import images_to_tensor, tensor_to_images  # noqa: E402

STEPS, GUIDANCE = 2, 5.0
tiny = tiny_diffusion.tiny  # the tiny SD models, a session fixture built once for all diffusion test modules


def same_pictures(ours: list[np.ndarray], theirs: list[np.ndarray]) -> bool:
    return len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


# --- lucy_edit ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lucy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lucy(tmp_path_factory.mktemp("tiny-lucy"))


def test_lucy_edit_one_window_is_the_pipeline_pixel_for_pixel(lucy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """9 frames of 40x56 (padded to 48x64 inside the stage, cut back after) equal `LucyEditPipeline` called on the
    padded frames with the same instruction and noise, cut the same way."""
    import diffusers.pipelines.lucy.pipeline_lucy_edit as lucy_edit
    import torch.nn.functional as F

    config = EditConfig(model=str(lucy), instruction="make it red", steps=STEPS, guidance=GUIDANCE, window=9,
                        window_overlap=4)  # fmt: skip
    stage = VideoModelStage(config)
    assert stage.multiple == 16
    images = noisy_frames(9, width=56, height=40)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    monkeypatch.setattr(lucy_edit, "randn_tensor", lambda shape, generator=None, device=None, dtype=None, layout=None:
                        stage.noise(0, 0, shape).to(device, dtype))  # fmt: skip
    padded = F.pad(images_to_tensor(images), (0, 8, 0, 8), mode="replicate")
    theirs = stage.pipe(video=list(padded), prompt="make it red", height=48, width=64, num_frames=9,
                        num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="pt",
                        max_sequence_length=16).frames[0]  # fmt: skip
    assert same_pictures(ours, tensor_to_images(theirs[..., :40, :56]))


@pytest.mark.parametrize(
    ("options", "words"),
    [({"window": 8}, "4k+1"), ({"image_guidance": 1.5}, "image_guidance"),
     ({"prompt": "x", "kind": "restyle"}, "edit")],
)
def test_lucy_edit_refuses_what_means_nothing_in_one_line(lucy: Path, options: dict, words: str) -> None:
    kind = options.pop("kind", "edit")
    base = {"model": str(lucy)} | ({"instruction": "make it red"} if kind == "edit" else {})
    config = (EditConfig if kind == "edit" else RestyleConfig)(**base, **options)
    with pytest.raises(V2VError) as error:
        VideoModelStage(config)
    assert words in str(error.value) and "\n" not in str(error.value)


# --- animatediff ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_motion_adapter(tmp_path_factory.mktemp("tiny-motion"), tiny / "sd" / "unet")


def test_animatediff_one_window_is_the_pipeline_pixel_for_pixel(tiny: Path, adapter: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """6 frames of 44x60 (padded to 48x64, cut back) through an SD base with a motion adapter equal
    `AnimateDiffVideoToVideoPipeline` on the padded frames with the same prompt, noise and the posterior's mode
    (the pipeline samples it; the stage takes the mode), a frame at a time through the VAE."""
    import diffusers.pipelines.animatediff.pipeline_animatediff_video2video as animatediff
    import torch.nn.functional as F

    config = RestyleConfig(model=str(tiny / "sd"), motion_adapter=str(adapter), prompt="a watercolour", steps=STEPS,
                           strength=0.75, guidance=GUIDANCE, window=6, window_overlap=2)  # fmt: skip
    stage = VideoModelStage(config)
    assert (stage.family.name, stage.multiple) == ("animatediff", 8)
    images = noisy_frames(6, width=60, height=44)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    monkeypatch.setattr(animatediff, "randn_tensor", lambda shape, generator=None, device=None, dtype=None, layout=None:
                        stage.noise(0, 0, (shape[0], shape[2], shape[1], *shape[3:])).permute(0, 2, 1, 3, 4)
                        .to(device, dtype))  # fmt: skip
    monkeypatch.setattr(animatediff, "retrieve_latents", lambda output, generator=None: output.latent_dist.mode())
    padded = F.pad(images_to_tensor(images), (0, 4, 0, 4), mode="replicate")
    theirs = stage.pipe(video=list(padded), prompt="a watercolour", height=48, width=64, num_inference_steps=STEPS,
                        strength=0.75, guidance_scale=GUIDANCE, output_type="pt", decode_chunk_size=1).frames[0]
    assert same_pictures(ours, tensor_to_images(theirs[..., :44, :60]))


def test_animatediff_controlnet_one_window_is_the_pipeline_pixel_for_pixel(tiny: Path, adapter: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With a Canny ControlNet, 6 frames equal `AnimateDiffVideoToVideoControlNetPipeline` given the control maps the
    stage made (each frame's Canny map), the same prompt and noise."""
    import diffusers.pipelines.animatediff.pipeline_animatediff_video2video_controlnet as animatediff

    config = RestyleConfig(model=str(tiny / "sd"), motion_adapter=str(adapter), controlnets=[str(tiny / "controlnet")],
                           prompt="a watercolour", steps=STEPS, strength=0.75, guidance=GUIDANCE, window=6,
                           window_overlap=2)  # fmt: skip
    stage = VideoModelStage(config)
    assert type(stage.pipe).__name__ == "AnimateDiffVideoToVideoControlNetPipeline"
    images = noisy_frames(6, width=64, height=48)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    maps = [frame_maps[0] for frame_maps in stage.vae.maps]
    assert len(maps) == 6 and all(m.shape == (3, 48, 64) for m in maps)
    monkeypatch.setattr(animatediff, "randn_tensor", lambda shape, generator=None, device=None, dtype=None, layout=None:
                        stage.noise(0, 0, (shape[0], shape[2], shape[1], *shape[3:])).permute(0, 2, 1, 3, 4)
                        .to(device, dtype))  # fmt: skip
    monkeypatch.setattr(animatediff, "retrieve_latents", lambda output, generator=None: output.latent_dist.mode())
    theirs = stage.pipe(video=list(images_to_tensor(images)), conditioning_frames=maps, prompt="a watercolour",
                        height=48, width=64, num_inference_steps=STEPS, strength=0.75, guidance_scale=GUIDANCE,
                        output_type="pt", decode_chunk_size=1).frames[0]  # fmt: skip
    assert same_pictures(ours, tensor_to_images(theirs))


def test_animatediff_controlnet_killed_after_a_window_resumes_to_the_same_pictures(tiny: Path, adapter: Path,
                                                                                    tmp_path: Path) -> None:
    """Windows of 3 overlapping by 1 with a ControlNet, stopped after the first window and run again from the frame its
    state was saved at (held latents, and the control maps of the frames taken): the same pictures, bit for bit."""
    config = RestyleConfig(model=str(tiny / "sd"), motion_adapter=str(adapter), controlnets=[str(tiny / "controlnet")],
                           prompt="a watercolour", steps=STEPS, strength=0.75, guidance=GUIDANCE, window=3,
                           window_overlap=1)  # fmt: skip
    stage = VideoModelStage(config, state_dir=tmp_path / "states")
    frames = as_frames(noisy_frames(7, width=32, height=32))
    whole = [frame.image for frame in stage.process(iter(frames))]
    run = stage.process(iter(frames))
    first = [next(run).image for _ in range(2)]  # the first window's frames; then the run is killed
    run.close()
    rest = [frame.image for frame in stage.process(iter(frames[2:]))]
    assert same_pictures(first + rest, whole)


def test_animatediff_windows_hold_the_overlap_and_any_length_fits(tiny: Path, adapter: Path) -> None:
    """Any window length is AnimateDiff's rule (5 here, not 4k+1): 11 frames in windows of 5 overlapping by 2 give
    11 frames, the second window sees the first's final latents over its overlap."""
    config = RestyleConfig(model=str(tiny / "sd"), motion_adapter=str(adapter), prompt="a watercolour", steps=STEPS,
                           strength=0.75, guidance=GUIDANCE, window=5, window_overlap=2)  # fmt: skip
    stage = VideoModelStage(config)
    seen: list[tuple[int, int, int]] = []
    denoise = stage.chain.denoise

    def recording(clean: torch.Tensor, start: int, hold: torch.Tensor | None) -> torch.Tensor:
        seen.append((start, clean.shape[2], 0 if hold is None else hold.shape[2]))
        return denoise(clean, start, hold)

    stage.chain.denoise = recording
    out = list(stage.process(iter(as_frames(noisy_frames(11, width=64, height=48)))))
    assert [frame.index for frame in out] == list(range(11))
    assert seen == [(0, 5, 0), (3, 5, 2), (6, 5, 2)]


@pytest.mark.parametrize(
    ("options", "words"),
    [({"window": 40}, "motion adapter's length"), ({"window": 1}, "at least 2"),
     ({"window_overlap": 16}, "window_overlap"), ({"model": "wan"}, "SD 1.5"),
     ({"controlnets": ["controlnet"], "control_modes": [1]}, "control_modes")],
)
def test_animatediff_bad_input_is_one_line(tiny: Path, adapter: Path, lucy: Path, options: dict, words: str) -> None:
    values = {"model": str(tiny / "sd"), "motion_adapter": str(adapter), "prompt": "x", **options}
    if values["model"] == "wan":
        values["model"] = str(lucy)
    if values.get("controlnets"):
        values["controlnets"] = [str(tiny / "controlnet")]
    with pytest.raises(V2VError) as error:
        VideoModelStage(RestyleConfig(**values))
    assert words in str(error.value) and "\n" not in str(error.value)


# --- ltx ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_ltx(tmp_path_factory.mktemp("tiny-ltx"))


def ltx_stage(ltx: Path, state_dir: Path | None = None, **options: object) -> VideoModelStage:
    values = {"model": str(ltx), "prompt": "a watercolour", "steps": STEPS, "strength": 0.75, "guidance": 3.0,
              "window": 17, "window_overlap": 8, **options}  # fmt: skip
    return VideoModelStage(RestyleConfig(**values), state_dir=state_dir)  # type: ignore[arg-type]


def test_ltx_one_window_is_the_pipeline_pixel_for_pixel(ltx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """17 frames (8k+1) of 56x80, padded to 64x96 (sides of 32) and cut back, equal `LTXConditionPipeline` given the
    padded frames' latents (the VAE's mode, normalised) with `denoise_strength` and the same prompt and noise."""
    import diffusers.pipelines.ltx.pipeline_ltx_condition as ltx_condition
    import torch.nn.functional as F

    stage = ltx_stage(ltx)
    assert (stage.family.name, stage.multiple) == ("ltx", 32)
    images = noisy_frames(17, width=80, height=56)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    pipe = stage.pipe
    padded = F.pad(images_to_tensor(images), (0, 16, 0, 8), mode="replicate")
    with torch.inference_mode():
        moments = pipe.vae.encode((padded * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0)).latent_dist.mode()
        latents = pipe._normalize_latents(moments, pipe.vae.latents_mean, pipe.vae.latents_std)
    monkeypatch.setattr(ltx_condition, "randn_tensor", lambda shape, generator=None, device=None, dtype=None,
                        layout=None: stage.noise_at([0, *range(1, 17, 8)], shape).to(device, dtype))  # fmt: skip
    theirs = pipe(latents=latents, denoise_strength=0.75, prompt="a watercolour", height=64, width=96,
                  num_frames=17, num_inference_steps=STEPS, guidance_scale=3.0, output_type="pt",
                  max_sequence_length=16).frames[0]  # fmt: skip
    assert same_pictures(ours, tensor_to_images(theirs[..., :56, :80]))


def test_ltx_windows_share_overlap_plus_one_frames_and_hold_latents(ltx: Path) -> None:
    """30 frames in windows of 17 overlapping by 8: windows start every 8 frames, the second holds the first's last
    latent frame (as its latent frame 1), and the last is 14 frames padded to 17; every frame comes out once."""
    stage = ltx_stage(ltx)
    seen: list[tuple[int, int]] = []
    denoise = stage.chain.denoise

    def recording(clean: torch.Tensor, start: int, hold: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        seen.append((clean.shape[2], 0 if hold is None else hold.shape[2]))
        return denoise(clean, start, hold, noise=noise)

    stage.chain.denoise = recording
    out = list(stage.process(iter(as_frames(noisy_frames(30, width=64, height=32)))))
    assert [frame.index for frame in out] == list(range(30))
    assert seen == [(3, 0), (3, 1), (3, 1)]


def test_ltx_killed_after_a_window_resumes_to_the_same_pictures(ltx: Path, tmp_path: Path) -> None:
    """Stopped after its first window and run again from the frame the window state was saved at, the result equals
    the uninterrupted run's, bit for bit."""
    stage = ltx_stage(ltx, state_dir=tmp_path / "states")
    frames = as_frames(noisy_frames(30, width=64, height=32))
    whole = [frame.image for frame in stage.process(iter(frames))]
    run = stage.process(iter(frames))
    first = [next(run).image for _ in range(8)]  # the first window's frames; then the run is killed
    run.close()
    rest = [frame.image for frame in stage.process(iter(frames[8:]))]
    assert same_pictures(first + rest, whole)


@pytest.mark.parametrize(
    ("options", "words"),
    [({"window": 16}, "8k+1"), ({"window_overlap": 4}, "multiple of 8"), ({"window_overlap": 16}, "smaller"),
     ({"controlnets": ["canny"]}, "ControlNet"), ({"motion_adapter": "adapter"}, "SD 1.5")],
)
def test_ltx_refuses_what_means_nothing_in_one_line(ltx: Path, options: dict, words: str) -> None:
    with pytest.raises(V2VError) as error:
        ltx_stage(ltx, **options)
    assert words in str(error.value) and "\n" not in str(error.value)
