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

from test_video_models import as_frames, noisy_frames  # noqa: E402
from tiny_diffusion import one_thread  # noqa: E402, F401 (an autouse fixture)
from tiny_video_families import build_tiny_lucy  # noqa: E402

from v2v.diffusion.config import EditConfig  # noqa: E402
from v2v.diffusion.video_stage import VideoModelStage  # noqa: E402
from v2v.errors import V2VError  # noqa: E402
from v2v.frames import images_to_tensor, tensor_to_images  # noqa: E402

STEPS, GUIDANCE = 2, 5.0


def same_pictures(ours: list[np.ndarray], theirs: list[np.ndarray]) -> bool:
    return len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


# --- lucy_edit ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lucy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lucy(tmp_path_factory.mktemp("tiny-lucy"))


def test_lucy_edit_one_window_is_the_pipeline_pixel_for_pixel(lucy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """9 frames of 40x56 (padded to 48x64 inside the stage, cut back after) equal `LucyEditPipeline` called on the
    padded frames with the same instruction and noise, cut the same way."""
    import diffusers.pipelines.lucy.pipeline_lucy_edit as lucy
    import torch.nn.functional as F

    config = EditConfig(model=str(lucy), instruction="make it red", steps=STEPS, guidance=GUIDANCE, window=9,
                        window_overlap=4)  # fmt: skip
    stage = VideoModelStage(config)
    assert stage.multiple == 16
    images = noisy_frames(9, width=56, height=40)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    monkeypatch.setattr(lucy, "randn_tensor", lambda shape, generator=None, device=None, dtype=None, layout=None:
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
    from v2v.diffusion.config import RestyleConfig

    kind = options.pop("kind", "edit")
    base = {"model": str(lucy)} | ({"instruction": "make it red"} if kind == "edit" else {})
    config = (EditConfig if kind == "edit" else RestyleConfig)(**base, **options)
    with pytest.raises(V2VError) as error:
        VideoModelStage(config)
    assert words in str(error.value) and "\n" not in str(error.value)
