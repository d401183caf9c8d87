"""Stacked LoRAs (`--lora PATH[:WEIGHT]`, repeatable): diffusers' adapters with their weights, fused once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from tiny_diffusion import frames, max_diff  # noqa: E402
from tiny_diffusion import sd_config as make_config  # noqa: E402

from v2v.diffusion.loras import Lora, parse_lora, parse_loras  # noqa: E402
from v2v.diffusion.stage import RestyleStage  # noqa: E402
from v2v.errors import ModelError, ParameterError  # noqa: E402

tiny = tiny_diffusion.tiny
one_thread = tiny_diffusion.one_thread


def write_lora(path: Path, unet: object, layers: tuple[str, ...], seed: int, text_width: int | None = None) -> Path:
    """A rank-4 LoRA in diffusers' layout (`unet.<layer>.lora_A.weight` (4, in), `lora_B.weight` (out, 4)) on the
    UNet's `layers` (suffixes of its Linear layers' names); `text_width` gives the `attn2.to_k/to_v` layers that
    input width instead of the base's (a LoRA made for another family)."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in unet.named_modules():  # type: ignore[attr-defined]
        if not isinstance(module, torch.nn.Linear) or not name.endswith(layers):
            continue
        width = text_width if text_width and name.endswith(("attn2.to_k", "attn2.to_v")) else module.in_features
        tensors[f"unet.{name}.lora_A.weight"] = torch.randn(4, width, generator=generator) * 0.3
        tensors[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def two_loras(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny / "sd" / "unet"))
    folder = tmp_path_factory.mktemp("loras")
    return (write_lora(folder / "a.safetensors", unet, ("attn1.to_q", "attn1.to_v"), seed=1),
            write_lora(folder / "b.safetensors", unet, ("attn2.to_q", "attn2.to_out.0", "ff.net.2"), seed=2))


def test_two_loras_with_weights_equal_diffusers_set_adapters(tiny: Path, two_loras: tuple[Path, Path]) -> None:
    """v2v's fused stack gives diffusers' own `set_adapters([a, b], [w1, w2])` result, and each LoRA counts."""
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    a, b = two_loras
    weights = (0.7, -1.3)
    config = make_config(tiny, temporal=False, lora=[f"{a}:{weights[0]}", f"{b}:{weights[1]}"])
    image = frames(1)[0]
    ours = RestyleStage(config).diffuse([image], [0])[0]

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(tiny / "sd"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(a.parent), weight_name=a.name, adapter_name="a")
    pipe.load_lora_weights(str(b.parent), weight_name=b.name, adapter_name="b")

    def theirs(adapter_weights: tuple[float, float]) -> np.ndarray:
        pipe.set_adapters(["a", "b"], adapter_weights=list(adapter_weights))
        out = pipe(prompt=config.prompt, image=Image.fromarray(image), strength=config.strength,
                   num_inference_steps=config.steps, guidance_scale=config.guidance, output_type="np",
                   generator=torch.Generator().manual_seed(config.seed)).images[0]  # fmt: skip
        return (out * 255).round().astype(np.uint8)

    assert max_diff([ours], [theirs(weights)]) == 0
    # each LoRA changes the output: the stack differs from either alone and from none
    only_a, only_b, none = theirs((weights[0], 0.0)), theirs((0.0, weights[1])), theirs((0.0, 0.0))
    for other in (only_a, only_b, none):
        assert max_diff([ours], [other]) > 2
    assert max_diff([only_a], [none]) > 2 and max_diff([only_b], [none]) > 2


def test_a_lora_for_another_family_is_refused_naming_both(tiny: Path, tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny / "sd" / "unet"))
    sdxl = write_lora(tmp_path / "sdxl.safetensors", unet, ("attn2.to_k", "attn2.to_v"), seed=3, text_width=2048)
    with pytest.raises(ModelError) as error:
        RestyleStage(make_config(tiny, lora=[str(sdxl)]))
    message = str(error.value)
    assert "Stable Diffusion XL" in message and "(Stable Diffusion 1.x/2.x)" in message
    assert "\n" not in message and "2048 inputs, the base's 32" in message


def test_lora_weights_parse_and_a_weight_that_is_not_a_number_is_one_line(tmp_path: Path) -> None:
    assert parse_lora("style.safetensors:0.8") == Lora("style.safetensors", 0.8)
    assert parse_lora("org/repo/x.safetensors") == Lora("org/repo/x.safetensors", 1.0)
    assert parse_lora(r"C:\loras\x.safetensors") == Lora(r"C:\loras\x.safetensors", 1.0)
    odd = tmp_path / "odd:name"
    odd.write_bytes(b"")
    assert parse_lora(str(odd)) == Lora(str(odd), 1.0)  # a path that exists is taken whole
    assert parse_loras("one.safetensors") == [Lora("one.safetensors")]  # a recipe's single string
    for bad in ("style.safetensors:strong", "style.safetensors:nan"):
        with pytest.raises(ParameterError, match="not a number"):
            parse_lora(bad)


def test_the_cli_refuses_a_bad_weight_in_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import write_clip

    from v2v.cli import main

    clip = write_clip(tmp_path / "in.mp4", 2)
    code = main(["restyle", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny / "sd"),
                 "--prompt", "ink", "--lora", "a.safetensors:1", "--lora", "b.safetensors:x"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["v2v: error: --lora weight 'x' in 'b.safetensors:x' is not a number (PATH[:WEIGHT], e.g. "
                   "style.safetensors:0.8)"]  # fmt: skip


def test_a_recipe_takes_a_list_of_loras(tiny: Path, two_loras: tuple[Path, Path], tmp_path: Path) -> None:
    from v2v.diffusion.config import RestyleConfig

    a, b = two_loras
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{tiny / "sd"}"\nprompt = "ink"\nlora = ["{a}:0.5", "{b}"]\n')
    config = RestyleConfig.from_toml(recipe).check()
    assert parse_loras(config.lora) == [Lora(str(a), 0.5), Lora(str(b), 1.0)]
