"""GPU readiness (issue 24), proved on the CPU: the text encoders run once a run for every family, nothing in a
per-step path reads a tensor back to the host, `--offload` is refused without an accelerator, and
`scripts/gpu_check.py --tiny` runs every stage kind. Tests that need CUDA are marked `gpu` (deselected by
pyproject's addopts; run them with `pytest -m gpu` on a CUDA machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
import tiny_dit  # noqa: E402
from tiny_diffusion import frames  # noqa: E402

from v2v.diffusion.config import EditConfig, RestyleConfig  # noqa: E402
from v2v.diffusion.stage import DiffusionStage  # noqa: E402
from v2v.frames import Frame  # noqa: E402
from v2v.inpaint.stage import InpaintConfig  # noqa: E402

one_thread = tiny_diffusion.one_thread  # one torch thread (autouse)
tiny = tiny_diffusion.tiny
tiny_flux = tiny_dit.tiny_flux
FRAMES = 20


@pytest.fixture(scope="session")
def tiny_inpaint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_inpaint import shared_tiny_inpaint

    return shared_tiny_inpaint(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_more(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SD3 and Qwen-Image-Edit, in one folder."""
    folder = tmp_path_factory.mktemp("tiny-sd3-qwen")
    tiny_dit.build_tiny_sd3(folder)
    tiny_dit.build_tiny_qwen_image_edit(folder)
    return folder


# family -> (config class, fixture holding it, folder, extra settings)
FAMILIES: dict[str, tuple[type, str, str, dict[str, Any]]] = {
    "sd": (RestyleConfig, "tiny", "sd", {}),
    "sdxl": (RestyleConfig, "tiny", "sdxl", {}),
    "instruct-pix2pix": (EditConfig, "tiny", "instruct-pix2pix", {}),
    "sd-inpaint": (InpaintConfig, "tiny_inpaint", "sd-inpaint", {}),
    "sdxl-inpaint": (InpaintConfig, "tiny_inpaint", "sdxl-inpaint", {}),
    "flux": (RestyleConfig, "tiny_flux", "flux", {"true_cfg": 2.0}),
    "flux-fill": (InpaintConfig, "tiny_inpaint", "flux-fill", {}),
    "flux-kontext": (EditConfig, "tiny_flux", "flux-kontext", {}),
    "sd3": (RestyleConfig, "tiny_more", "sd3", {}),
    "qwen-image-edit": (EditConfig, "tiny_more", "qwen-image-edit", {}),
}


def family_stage(request: pytest.FixtureRequest, name: str, **overrides: Any) -> DiffusionStage:
    config_class, fixture, folder, extra = FAMILIES[name]
    values: dict[str, Any] = dict(model=str(request.getfixturevalue(fixture) / folder), steps=2, strength=0.5,
                                  seed=3, negative_prompt="dull", **extra)  # fmt: skip
    values["instruction" if config_class is EditConfig else "prompt"] = "a watercolour"
    values.update(overrides)
    return DiffusionStage(config_class(**values))


def run_frames(stage: DiffusionStage, count: int, size: int = 32) -> list[np.ndarray]:
    images = frames(count, width=size, height=size)
    if stage.kind.startswith("inpaint"):
        mask = np.zeros((size, size), np.float32)
        mask[8:24, 8:24] = 1
        out = []
        for start in range(0, count, stage.config.batch_size):
            chunk = images[start : start + stage.config.batch_size]
            out += stage.diffuse(chunk, list(range(start, start + len(chunk))), masks=[mask] * len(chunk))
        return out
    return [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(images)))]


def count_encodings(pipe: Any) -> dict[str, list[int]]:
    """Per text encoder of `pipe`, the rows (prompts) of each call, recorded by a forward pre-hook."""
    calls: dict[str, list[int]] = {}
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        encoder = getattr(pipe, name, None)
        if encoder is None:
            continue
        calls[name] = []

        def record(module: Any, args: tuple, kwargs: dict, rows: list[int] = calls[name]) -> None:
            ids = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            rows.append(int(ids.shape[0]) if ids is not None else 1)

        encoder.register_forward_pre_hook(record, with_kwargs=True)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_text_encoders_run_once_a_run_for_every_family(request: pytest.FixtureRequest, name: str) -> None:
    """A 20-frame run in batches of 4 encodes the prompt and the negative prompt once each, one row each, whatever
    the frame count; Qwen-Image-Edit's text encoder reads each frame with the instruction, so it runs once a
    frame and a pass (nothing can be cached), and no more."""
    stage = family_stage(request, name, batch_size=4, temporal=False)
    calls = count_encodings(stage.pipe)
    assert calls, "the pipeline has no text encoder to count"
    count = 1 if stage.family.text_reads_image else FRAMES  # Qwen reads each frame at a megapixel: slow here
    out = run_frames(stage, count)
    assert len(out) == count
    passes = 2 if stage.guided else 1  # the prompt and, with a negative pass, the negative prompt
    for encoder, rows in calls.items():
        if stage.family.text_reads_image:
            assert sum(rows) == count * passes, (encoder, rows)
        else:
            assert rows == [1] * passes, (encoder, rows)


# --- no host sync in a per-step path -----------------------------------------------------------------------

SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture
def strict_steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Inside v2v's per-step code (every cross-frame processor, the DiT step hook, latent fusion's step callback, a
    map rescaled per shot) a tensor read back to the host fails the test: `Tensor.item`, `float(t)`, `bool(t)`,
    `.cpu()`, ... raise there. Returns the names of the guarded calls that ran (so the guard is known to be on)."""
    from v2v.diffusion import attention, control, dit_attention, latent_fusion

    depth = [0]
    entered: list[str] = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def refuse(self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            if depth[0]:
                raise AssertionError(f"host sync in a per-step path: Tensor.{_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, refuse)

    def guarded(function: Any, label: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            entered.append(label)
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1

        return run

    for cls in [attention.CrossFrameAttnProcessor, *dit_attention.DiTCrossFrameProcessor.__subclasses__()]:
        monkeypatch.setattr(cls, "__call__", guarded(cls.__call__, cls.__name__))
    # per frame: the shot's running range (the raw map is kornia's, not v2v's)
    monkeypatch.setattr(control.ShotNormalised, "_rescaled", guarded(control.ShotNormalised._rescaled, "shot range"))
    watch = dit_attention._watch_calls

    def watch_guarded(transformer: Any, *args: Any) -> Any:
        register = transformer.register_forward_pre_hook

        def register_guarded(hook: Any, **kwargs: Any) -> Any:
            return register(guarded(hook, "step hook"), **kwargs)

        transformer.register_forward_pre_hook = register_guarded
        try:
            return watch(transformer, *args)
        finally:
            del transformer.register_forward_pre_hook

    monkeypatch.setattr(dit_attention, "_watch_calls", watch_guarded)
    make_callback = latent_fusion.LatentFusion._callback
    monkeypatch.setattr(latent_fusion.LatentFusion, "_callback",
                        lambda self, *args: guarded(make_callback(self, *args), "latent fusion"))  # fmt: skip
    return entered


@pytest.mark.parametrize("name", ["sd", "flux", "sd3"])
def test_no_host_sync_in_a_per_step_path(request: pytest.FixtureRequest, strict_steps: list[str], name: str) -> None:
    """A temporal run (cross-frame attention, latent fusion, a shot-rescaled control map for SD) of three frames with
    a cut-free clip: nothing in v2v's per-step code reads a tensor back to the host."""
    extra: dict[str, Any] = {}
    if name == "sd":
        extra = dict(controlnets=[str(request.getfixturevalue("tiny") / "controlnet")], controls=["softedge-sobel"])
    stage = family_stage(request, name, steps=4, strength=0.75, latent_fusion=0.5, **extra)
    assert len(run_frames(stage, 3)) == 3
    assert "latent fusion" in strict_steps and len(set(strict_steps)) >= 3, set(strict_steps)


# --- offload ------------------------------------------------------------------------------------------------


def test_offload_without_an_accelerator_is_refused_in_one_line(tiny: Path, tmp_path: Path, capsys: Any) -> None:
    """`--offload model` on a machine (or device) with no CUDA: one line, exit 2 (a usage error), nothing written,
    before any model loads; `--offload none` runs."""
    from conftest import write_clip

    from v2v.cli import main
    from v2v.diffusion.config import check_offload
    from v2v.errors import UsageError

    clip = write_clip(tmp_path / "in.mp4", frames=2, width=32, height=32)
    out = tmp_path / "out.mp4"
    common = [str(clip), "-o", str(out), "--model", str(tiny / "sd"), "--steps", "2", "--no-progress", "--temporal",
              "off"]  # fmt: skip
    restyle = ["restyle", "--prompt", "ink"]
    for command in (restyle, ["edit", "--instruction", "x"], ["inpaint", "--prompt", "ink", "--mask", str(clip)]):
        capsys.readouterr()
        assert main([*command, *common, "--offload", "model"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--offload model" in err and "CUDA" in err, err
        assert not out.exists()
    with pytest.raises(UsageError, match="sequential"):
        check_offload("sequential", torch.device("cpu"))
    assert main([*restyle, *common, "--offload", "none"]) == 0 and out.exists()


# --- scripts/gpu_check.py --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_stage_kind(tmp_path: Path) -> None:
    """The GPU check's own code paths with tiny models on the CPU (so the script cannot rot): at least 10 stage kinds,
    each ok with finite outputs and its timings; only a family not built yet may say so, and never passes."""
    import json
    import subprocess
    import sys

    out = tmp_path / "tiny.json"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "scripts" / "gpu_check.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.exists(), done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    passed = [row for row in rows if row["ok"]]
    assert len(passed) >= 10, [(row["stage"], row.get("error")) for row in rows]
    for row in rows:
        if not row["ok"]:
            assert row.get("status") == "not built yet", row
    for row in passed:
        assert row["finite"] is True and row["v2v_off_s_per_frame"] is not None and row["peer_s_per_frame"], row
    assert done.returncode == 0 and "| stage | ok |" in done.stdout


# --- CUDA only (marked gpu: deselected by pyproject's addopts; `pytest -m gpu` on a CUDA machine) ----------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_in_half_precision_on_cuda(request: pytest.FixtureRequest, name: str) -> None:
    """Each family in its CUDA default dtype (fp16, or bf16 for FLUX, SD3 and Qwen) and in the other half type,
    temporal on: placed on the device (pipeline, bank), finite outputs, and the peak memory it took."""
    stage = family_stage(request, name, batch_size=2, device="cuda")
    assert stage.device.type == "cuda" and stage.pipe.device.type == "cuda"
    for dtype in ("fp16", "bf16"):
        stage = family_stage(request, name, batch_size=2, device="cuda", dtype=dtype)
        finite: list[Any] = []
        stage.family.denoiser(stage.pipe).register_forward_hook(
            lambda module, args, output, finite=finite: finite.append(torch.isfinite(output[0]).all()))
        torch.cuda.reset_peak_memory_stats()
        out = run_frames(stage, 3, size=64)
        assert len(out) == 3 and all(bool(flag) for flag in finite), (name, dtype)
        assert all(kv[0].device.type == "cuda" for kv in stage.bank.previous.values()), name
        assert torch.cuda.max_memory_allocated() > 0


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_gives_what_the_device_alone_gives(request: pytest.FixtureRequest, offload: str) -> None:
    """The same frames with the weights offloaded as with them all on the device (fp32, temporal on)."""
    placed = run_frames(family_stage(request, "sd", device="cuda", dtype="fp32", offload="none"), 3)
    offloaded_stage = family_stage(request, "sd", device="cuda", dtype="fp32", offload=offload)
    assert offloaded_stage.offload == offload
    offloaded = run_frames(offloaded_stage, 3)
    assert tiny_diffusion.max_diff(placed, offloaded) <= 1


def test_scene_detection_runs_once_a_frame(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporal restyle with a shot-rescaled control map: the stage's cuts, its fuser's and the map's all come
    from one scene signature a frame."""
    from v2v import scenes

    computed: list[int] = []
    signature = scenes._signature
    monkeypatch.setattr(scenes, "_signature", lambda image: (computed.append(id(image)), signature(image))[1])
    extra = dict(controlnets=[str(request.getfixturevalue("tiny") / "controlnet")], controls=["softedge-sobel"])
    stage = family_stage(request, "sd", steps=2, latent_fusion=0.0, **extra)
    assert len(run_frames(stage, 4)) == 4
    assert len(computed) == 4, computed
