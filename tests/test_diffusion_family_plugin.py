"""A DiT family is one file: the family below is defined in this test module only, registered with the `register`
call the built-in families make, and runs end to end through `DiffusionStage` with cross-frame attention on the
layers it picks, with the processor class it names; nothing in the package knows its name."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_dit  # noqa: E402
from tiny_diffusion import frames, max_diff, one_thread  # noqa: E402, F401 (one_thread: an autouse fixture)

import v2v  # noqa: E402
from v2v.diffusion import registry  # noqa: E402
from v2v.diffusion.config import RestyleConfig  # noqa: E402
from v2v.diffusion.dit_attention import FluxCrossFrameProcessor, cross_frame_layers  # noqa: E402
from v2v.diffusion.families.dit import DiffusionTransformer  # noqa: E402
from v2v.diffusion.registry import Defaults, ModelInfo, register  # noqa: E402
from v2v.diffusion.stage import DiffusionStage  # noqa: E402
from v2v.frames import Frame  # noqa: E402

tiny = tiny_dit.tiny_flux  # the tiny FLUX models, a session fixture built once for all DiT test modules

NAME = "plugin-dit"
PIPELINE_CLASS = "PluginDiTPipeline"  # what the test model's model_index.json names: no built-in family takes it


class CountingProcessor(FluxCrossFrameProcessor):
    """FLUX's cross-frame joint attention, counting its calls: the family's own processor class is the one used."""

    calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        return super().__call__(*args, **kwargs)


class PluginDiT(DiffusionTransformer):
    """A guidance-distilled DiT restyled by diffusers' FLUX img2img pipeline, with cross-frame attention on its
    single-stream blocks only."""

    name = NAME
    title = "Plugin DiT"
    pipelines = {"restyle": "FluxImg2ImgPipeline"}
    defaults = Defaults(steps=4, guidance=3.5, strength=0.75, half=False, multiple=16)
    packed_latents = True
    takes_negative_prompt = False

    def recognise(self, info: ModelInfo) -> bool:
        return not info.is_file and info.class_name == PIPELINE_CLASS

    def guided(self, pipe: Any, guidance: float, image_guidance: float | None) -> bool:
        return False  # the guidance is an input of the transformer: one pass a step

    def cross_frame_processor(self) -> type[CountingProcessor]:
        return CountingProcessor

    def gets_cross_frame(self, layer: str) -> bool:
        return layer.startswith("single_transformer_blocks.")


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[registry.Family]:
    """The family, registered for one test: `register` writes into a copy of the registry that is dropped after."""
    registry.all_families()  # the built-in families first, so the copy holds them
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    yield register(PluginDiT())


@pytest.fixture
def model(tiny: Path, tmp_path: Path) -> Path:
    """The tiny FLUX models as a pipeline folder of the plugin's class."""
    folder = tmp_path / "plugin-model"
    shutil.copytree(tiny / "flux", folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": PIPELINE_CLASS}))
    return folder


def run(stage: DiffusionStage, images: list[Any]) -> list[Any]:
    return [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(images)))]


def test_a_dit_family_in_one_module_runs_with_cross_frame_attention(
    plugin: registry.Family, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RestyleConfig(model=str(model), prompt="a watercolour", seed=3, fusion=0.0, latent_fusion=0.0)
    stage = DiffusionStage(config)
    assert stage.family is plugin and type(stage.pipe).__name__ == "FluxImg2ImgPipeline"
    layers = cross_frame_layers(stage.pipe.transformer, plugin)
    assert layers == ["single_transformer_blocks.0.attn.processor"]  # the one the family picks, not the double block
    CountingProcessor.calls = 0
    images = frames(3)
    tied = run(stage, images)
    assert CountingProcessor.calls == 3 * 3  # 3 frames x 3 steps (4 x strength 0.75), one layer
    assert len(stage.bank.anchor) == len(stage.bank.previous) == 3  # the layer's keys/values at each step
    assert {kv[0].shape[-2] for kv in stage.bank.previous.values()} == {12}  # a 64x48 frame's image tokens
    # the same run without the family's processors: the first frame is the same, the frames after it are not
    monkeypatch.setattr(PluginDiT, "cross_frame_attention", lambda *_: contextlib.nullcontext())
    CountingProcessor.calls = 0
    loose = run(DiffusionStage(config), images)
    assert CountingProcessor.calls == 0
    assert max_diff(tied[:1], loose[:1]) <= 1
    assert max_diff(tied[1:], loose[1:]) > 1


def test_the_family_is_listed_and_nothing_in_the_package_names_it(plugin: registry.Family) -> None:
    assert plugin in registry.families_doing("restyle")
    assert f"{NAME} (Plugin DiT)" in registry.known_list()
    package = Path(v2v.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert NAME not in text and PIPELINE_CLASS not in text, path


def test_the_registration_ended_with_its_test() -> None:
    assert NAME not in [family.name for family in registry.all_families()]
