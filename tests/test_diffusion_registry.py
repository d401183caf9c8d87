"""The diffusion family registry: recognition, refusals (one line each, before the big load), per-family defaults,
and the review fixes that came with it (IP-Adapter by family, SD 2.x single files, dtype names, the bank)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from tiny_diffusion import frames, max_diff  # noqa: E402
from tiny_diffusion import sd_config as make_config  # noqa: E402

from v2v.diffusion import registry  # noqa: E402
from v2v.diffusion.config import RestyleConfig  # noqa: E402
from v2v.diffusion.stage import RestyleStage  # noqa: E402
from v2v.errors import ModelError, UsageError  # noqa: E402

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


def reference_image(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


# --- recognition -------------------------------------------------------------------------------------------


def test_families_are_discovered_and_recognise_their_folders(tiny: Path) -> None:
    names = [family.name for family in registry.all_families()]
    assert {"sd", "sdxl", "instruct-pix2pix"} <= set(names)
    for folder, name in (("sd", "sd"), ("sdxl", "sdxl"), ("instruct-pix2pix", "instruct-pix2pix")):
        family, info = registry.detect(str(tiny / folder))
        assert family.name == name and info.path == tiny / folder
        claimed = [f.name for f in registry.all_families() if f.recognise(info)]
        assert claimed == [name]  # recognisers are exact: no two families claim a model


def test_single_files_are_told_apart_by_their_tensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    def single(name: str, tensors: dict[str, tuple[int, ...]]) -> registry.Family:
        path = tmp_path / name
        save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, str(path))
        return registry.detect(str(path))[0]

    conv = "model.diffusion_model.input_blocks.0.0.weight"
    assert single("v1.safetensors", {conv: (4, 4, 1, 1)}).name == "sd"
    assert single("xl.safetensors", {conv: (4, 4, 1, 1), "conditioner.embedders.1.model.x": (1,)}).name == "sdxl"
    assert single("ip2p.safetensors", {conv: (4, 8, 1, 1)}).name == "instruct-pix2pix"
    with pytest.raises(ModelError, match=r"cannot tell which family single file .*known: .*sd .*diffusers folder"):
        single("other.safetensors", {"some.other.weight": (2, 2)})


def test_a_flux_shaped_single_file_is_flux_for_restyle_and_kontext_for_edit(tmp_path: Path, caplog) -> None:
    """FLUX.1 dev/schnell and Kontext single files have one layout: the command's kind decides, and says so."""
    from safetensors.torch import save_file

    path = tmp_path / "flux1-kontext-dev.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2, 2), "img_in.weight": torch.zeros(4, 64)},
              str(path))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="v2v.diffusion.registry"):
        assert registry.detect(str(path), kind="restyle")[0].name == "flux"
        assert registry.detect(str(path), kind="edit")[0].name == "flux-kontext"
        assert registry.detect(str(path), kind="inpaint")[0].name == "flux"  # FluxInpaintPipeline
    assert "taken as FLUX.1 Kontext" in caplog.text and "claimed by" not in caplog.text
    fill = tmp_path / "flux1-fill-dev.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2, 2), "img_in.weight": torch.zeros(4, 384)},
              str(fill))  # fmt: skip
    assert registry.detect(str(fill), kind="edit")[0].name == "flux-fill"  # one claimant: kind changes nothing


def test_single_file_sd2_base_predicts_epsilon_and_768_v(tmp_path: Path) -> None:
    from diffusers import DDIMScheduler

    sd = registry.lookup("sd")
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": (4, 4, 1, 1), "cond_stage_model.model.x": (1,)}

    class Pipe:
        scheduler = DDIMScheduler(prediction_type="v_prediction")

    for name, configs, prediction in (
        ("v2-1_512-ema-pruned.safetensors", "stabilityai/stable-diffusion-2-1-base", "epsilon"),
        ("sd2-base.safetensors", "stabilityai/stable-diffusion-2-1-base", "epsilon"),
        ("v2-1_768-ema-pruned.safetensors", "stabilityai/stable-diffusion-2-1", "v_prediction"),
    ):
        info = registry.ModelInfo(tmp_path / name, tensors=tensors)
        assert sd.single_file_configs(info) == configs
        pipe = Pipe()
        sd.adjust_single_file(pipe, info, None)
        assert pipe.scheduler.config.prediction_type == prediction, name
    v1 = registry.ModelInfo(tmp_path / "v1-5.safetensors", tensors={tensors_v1_key(): (1,)})
    assert sd.single_file_configs(v1) == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_readme_and_help_lines_name_every_family() -> None:
    import re

    from v2v.commands import edit, restyle

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    listed = re.search(r"Diffusion models are recognised by family \((.*?)\), which", readme, re.S)
    assert listed is not None
    families = registry.all_families()
    assert sorted(re.findall(r"`([a-z0-9_-]+)`", listed.group(1))) == sorted(family.name for family in families)
    for family in families:
        for base, command in (("restyle", restyle), ("edit", edit)):
            if base in family.pipelines:
                assert family.title in command.HELP, (family.name, base)


def test_unknown_family_lists_the_known_ones(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ModelError, match=r"KandinskyV22Pipeline, which no v2v family takes; known families: .*sd "):
        RestyleStage(RestyleConfig(model=str(folder), prompt="x"))
    with pytest.raises(UsageError, match="known: .*sdxl"):
        registry.lookup("kandinsky")


def test_register_refuses_unknown_kinds_and_taken_names() -> None:
    class Odd(registry.Family):
        name = "sd"
        pipelines = {"restyle": "X"}

    with pytest.raises(ValueError, match="taken"):
        registry.register(Odd())

    class Strange(registry.Family):
        name = "strange"
        pipelines = {"paint": "X"}

    with pytest.raises(ValueError, match="unknown edit kinds"):
        registry.register(Strange())


def tensors_v1_key() -> str:
    return "model.diffusion_model.input_blocks.0.0.weight"


# --- controls and adapters of another family -----------------------------------------------------------------


def test_controlnet_of_another_family_is_refused_before_the_base_loads(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr(registry.Family, "load", never)
    owner = ", ".join(f.title for f in registry.controlnet_families("FluxControlNetModel")) or "FluxControlNetModel"
    with pytest.raises(ModelError, match=rf"is a {owner}.*Stable Diffusion 1.x/2.x; pass a ControlNet made for"):
        RestyleStage(make_config(tiny, controlnets=[str(tiny / "controlnet-flux")]))


def test_instruction_models_take_no_controlnet(tiny: Path) -> None:
    from v2v.diffusion.config import EditConfig
    from v2v.diffusion.stage import EditStage

    config = EditConfig(model=str(tiny / "instruct-pix2pix"), instruction="x", controlnets=[str(tiny / "controlnet")])
    with pytest.raises(UsageError, match="take no ControlNet"):
        EditStage(config)


def test_ip_adapter_defaults_and_mismatches_by_family(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    reference = reference_image(tmp_path)
    with pytest.raises(ModelError, match=r"hf download h94/IP-Adapter sdxl_models/ip-adapter_sdxl.safetensors"):
        RestyleStage(make_config(tiny, model=str(tiny / "sdxl"), ip_adapter=reference))  # SDXL's default, not SD 1.5's
    with pytest.raises(ModelError, match=r"hf download h94/IP-Adapter models/ip-adapter_sd15.safetensors"):
        RestyleStage(make_config(tiny, ip_adapter=reference))
    sd_adapter = str(tiny / "ip-adapter" / "models" / "ip-adapter_tiny.safetensors")
    with pytest.raises(ModelError, match=r"made for a base with text width 32, but base model is Stable Diffusion XL"):
        RestyleStage(make_config(tiny, model=str(tiny / "sdxl"), ip_adapter=reference, ip_adapter_model=sd_adapter))


def test_ip_adapter_batches_equal_single_frames(tiny: Path, tmp_path: Path) -> None:
    """The reference's embeds go to the pipeline once per call, which repeats them per frame (not B x B)."""
    from v2v.frames import Frame

    model = str(tiny / "ip-adapter" / "models" / "ip-adapter_tiny.safetensors")
    config = make_config(tiny, ip_adapter=reference_image(tmp_path), ip_adapter_model=model, temporal=False)
    single = RestyleStage(config)
    one_by_one = [single.diffuse([image], [i])[0] for i, image in enumerate(frames(3))]
    config.batch_size = 3
    together = [f.image for f in RestyleStage(config).process(iter(Frame(im, i) for i, im in enumerate(frames(3))))]
    assert max_diff(one_by_one, together) <= 1


# --- defaults: device, dtype, steps ---------------------------------------------------------------------------


def test_device_dtype_and_family_defaults(tiny: Path) -> None:
    stage = RestyleStage(RestyleConfig(model=str(tiny / "sd"), prompt="x"))
    assert stage.device == torch.device("cpu") and stage.dtype == torch.float32  # fp32 for diffusion on the CPU
    assert (stage.config.steps, stage.config.guidance, stage.config.strength) == (20, 7.5, 0.5)
    xl = RestyleStage(RestyleConfig(model=str(tiny / "sdxl"), prompt="x", steps=2))
    assert (xl.config.steps, xl.config.guidance) == (2, 5.0)  # given values win; SDXL's own guidance default
    half = RestyleStage(make_config(tiny, dtype="fp16", temporal=False))
    assert half.dtype == torch.float16 and half.pipe.unet.dtype == torch.float16
    with pytest.raises(UsageError, match="unknown dtype"):
        RestyleStage(make_config(tiny, dtype="fp8"))


def test_restyle_leaves_torch_threads_alone(
    tiny: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from v2v.cli import main

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    # temporal off: no flow fusion, so only restyle itself could change the thread count
    arguments = ["--model", str(tiny / "sd"), "--prompt", "x", "--steps", "2", "--max-frames", "1", "--no-progress",
                 "--temporal", "off"]  # fmt: skip
    assert main(["restyle", str(clip), "-o", str(tmp_path / "out.mp4"), *arguments]) == 0
    assert calls == []  # no process-wide thread change by default
    assert main(["restyle", str(clip), "-o", str(tmp_path / "again.mp4"), "--threads", "1", *arguments]) == 0
    assert calls == [1]  # only when the user asks, in the CLI


def test_a_size_the_family_cannot_take_is_padded_with_a_line(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage = RestyleStage(make_config(tiny, temporal=False))
    with caplog.at_level(logging.WARNING, logger="v2v.diffusion.stage"):
        out = stage.diffuse(frames(2, width=61, height=35), [0, 1])
    assert [image.shape for image in out] == [(35, 61, 3)] * 2
    lines = [r.getMessage() for r in caplog.records if "padded" in r.getMessage()]
    assert lines == ["61x35 frames are padded to 64x40 (Stable Diffusion 1.x/2.x takes sides that are multiples of 8) "
                     "and cut back after"]  # fmt: skip


# --- the cross-frame attention bank ---------------------------------------------------------------------------


def test_bank_stores_contiguous_copies_not_views() -> None:
    from v2v.diffusion.attention import FrameBank

    bank = FrameBank()
    bank.begin([False, False])
    qkv = torch.randn(2, 2, 2, 48, 4)  # two frames in one batch
    key = torch.randn(2, 2, 2, 48, 4)
    bank.attend("layer", 0, qkv, key, key.clone())
    for stored in (*bank.anchor[("layer", 0)], *bank.previous[("layer", 0)]):
        assert stored.is_contiguous() and stored.untyped_storage().nbytes() == stored.numel() * stored.element_size()
    assert torch.equal(bank.previous[("layer", 0)][0], key[:, 1])
    assert bank.nbytes() == 2 * 2 * (2 * 2 * 48 * 4 * 4)  # anchor + previous, keys + values


def test_bank_shapes_are_what_the_bank_stores(tiny: Path) -> None:
    for folder in ("sd", "instruct-pix2pix"):
        config = make_config(tiny, model=str(tiny / folder), fusion=0.0) if folder == "sd" else None
        if config is None:
            from v2v.diffusion.config import EditConfig
            from v2v.diffusion.stage import EditStage

            stage: RestyleStage = EditStage(EditConfig(model=str(tiny / folder), instruction="x", steps=2, fusion=0.0))
        else:
            stage = RestyleStage(config)
        stage.diffuse(frames(1, width=72, height=40), [0])  # padded to 72x40: odd latent sides (9x5)
        stored = {}
        for (layer, step), (key, _) in stage.bank.anchor.items():
            if step == 0:
                stored[layer] = (key.shape[-2], key.shape[-3] * key.shape[-1])  # tokens, heads x head width
        shapes = stage.family.bank_shapes(stage.pipe, 40, 72)
        assert sorted(shapes) == sorted(stored.values()), folder


def test_bank_is_capped_from_the_memory_available_and_says_so(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from v2v.diffusion import attention

    stage = RestyleStage(make_config(tiny, fusion=0.0))
    stage.diffuse(frames(1), [0])
    full = stage.bank.nbytes()
    assert stage.bank.max_tokens is None  # the tiny bank fits easily
    monkeypatch.setattr(attention, "bank_budget", lambda device: full // 4)
    capped = RestyleStage(make_config(tiny, fusion=0.0))
    with caplog.at_level(logging.WARNING, logger="v2v.diffusion.stage"):
        capped.diffuse(frames(2), [0, 1])
    cap = capped.bank.max_tokens
    assert cap is not None and any(f"keeping at most {cap} tokens a frame" in r.getMessage() for r in caplog.records)
    assert capped.bank.nbytes() <= full // 4
    assert all(key.shape[-2] <= cap for key, _ in capped.bank.anchor.values())
    chosen = RestyleStage(make_config(tiny, fusion=0.0, bank_tokens=5))
    chosen.diffuse(frames(1), [0])
    assert chosen.bank.max_tokens == 5  # --bank-tokens overrides the budget
