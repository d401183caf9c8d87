"""The README's promises: its examples run (the Python one as written, every `v2v …` one on the bundled sample), and
CI runs the README's test command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_python_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "samples").mkdir()
    subprocess.run([sys.executable, str(ROOT / "samples" / "make_sample.py"), "samples/sample.mp4"], cwd=tmp_path,
                   check=True)
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("72 frames at")
    assert (tmp_path / "samples" / "negative.mp4").exists()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert commands[1] == "bash scripts/test.sh"
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


# --- every `v2v …` example in the README runs on the bundled sample ---------------------------------------------

ONLINE = re.compile(r"#\s*online\b")  # the README's mark on an example that needs the network
OUTPUT_FLAGS = ("-o", "--output", "--plot")
# How much of the sample each example processes: 2 frames (enough for interpolation and flow), so the set runs in
# about a minute; preview picks its own frames and probe/models read none.
LIMIT = ["--max-frames", "2"]
UNLIMITED = {"preview", "probe", "models"}
# Stand-ins for the README's placeholder inputs, all made from the bundled sample: every video it names (in.mp4,
# clip.mp4, …) is the sample; pictures and checkpoints by name.
PICTURES = {"style.png": "frame.png", "logo.png": "ball.png", "4x_MyESRGAN.pth": "4x_compact.pth",
            "my_style_lora.safetensors": "tiny/lora/pytorch_lora_weights.safetensors",
            "iclight_sd15_fc.safetensors": "iclight_fc.safetensors"}
# The hub ids the README names, and the tiny model (tests/tiny_diffusion.py) each runs as, by V2V_MODEL_MAP.
TINY_MODELS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd",
    "lllyasviel/control_v11p_sd15_canny": "controlnet",
    "h94/IP-Adapter/models/ip-adapter_sd15.safetensors": "ip-adapter/models/ip-adapter_tiny.safetensors",
    "timbrooks/instruct-pix2pix": "instruct-pix2pix",
    "latent-consistency/lcm-lora-sdv1-5": "lora",
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "wan",  # tests/tiny_video.py
    "Wan-AI/Wan2.1-VACE-1.3B-diffusers": "wan-vace",
    "depth-anything/Depth-Anything-V2-Small-hf": "depth",
    "decart-ai/Lucy-Edit-Dev": "lucy",  # tests/tiny_video_families.py
    "guoyww/animatediff-motion-adapter-v1-5-2": "motion-adapter",
}


def readme_examples() -> list[str]:
    """Every `v2v …` command in the README's code blocks (continued lines joined), comments kept."""
    readme = (ROOT / "README.md").read_text()
    examples = []
    for block in re.findall(r"```(\w*)\n(.*?)```", readme, re.S):
        if block[0] == "python":
            continue
        for line in block[1].replace("\\\n", " ").splitlines():
            command = line.split("&& ")[-1].strip()  # the first command ends in its `v2v upscale`
            if command.startswith("v2v "):
                examples.append(command)
    return examples


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample, the pictures and checkpoint the README names, and the tiny models with their map."""
    import safetensors.torch
    import torch
    from PIL import Image
    from tiny_diffusion import build_tiny_models
    from tiny_video import build_tiny_wan, build_tiny_wan_vace
    from tiny_video_families import build_tiny_lucy, build_tiny_motion_adapter

    from v2v.restore.sr_models import named_model_path

    folder = tmp_path_factory.mktemp("readme")
    subprocess.run([sys.executable, str(ROOT / "samples" / "make_sample.py"), str(folder / "sample.mp4")], check=True)
    sys.path.insert(0, str(ROOT / "samples"))
    from make_sample import picture

    frame = picture(40)
    Image.fromarray(frame).save(folder / "frame.png")
    ball = np.all(frame == (235, 70, 50), axis=-1)  # the ball's colour on frame 40, where logo.png marks it
    Image.fromarray(ball.astype(np.uint8) * 255).save(folder / "ball.png")
    weights = safetensors.torch.load_file(named_model_path("realesr-animevideov3-x4"))
    torch.save(weights, folder / "4x_compact.pth")  # "any checkpoint spandrel recognises", as a user's .pth
    tiny = build_tiny_models(folder / "tiny")
    build_tiny_wan(tiny)
    build_tiny_wan_vace(tiny)
    build_tiny_lucy(tiny)
    build_tiny_motion_adapter(tiny, tiny / "sd" / "unet")
    from tiny_relight import write_ic_light

    write_ic_light(folder / "iclight_fc.safetensors", tiny / "sd" / "unet", 8)  # IC-Light's layout, for tiny SD
    (folder / "models.json").write_text(json.dumps({name: str(tiny / path) for name, path in TINY_MODELS.items()}))
    return folder


def as_run(example: str, stand_ins: Path) -> tuple[list[str], list[str]]:
    """The example's arguments with its placeholder inputs replaced by their stand-ins, and the outputs it names."""
    args = shlex.split(example, comments=True)[1:]
    outputs = []
    for position, token in enumerate(args):
        if position and args[position - 1] in OUTPUT_FLAGS:
            outputs.append(token)
        elif Path(token).suffix == ".mp4":
            args[position] = str(stand_ins / "sample.mp4")
        elif Path(token).name in PICTURES:
            args[position] = str(stand_ins / PICTURES[Path(token).name])
        elif Path(token.rpartition(":")[0]).name in PICTURES:  # a LoRA's PATH:WEIGHT
            name, _, weight = token.rpartition(":")
            args[position] = f"{stand_ins / PICTURES[Path(name).name]}:{weight}"
        elif (ROOT / token).is_file():  # a file the repository ships (a recipe)
            args[position] = str(ROOT / token)
        else:
            assert Path(token).suffix.lower() not in (".png", ".jpg", ".pth", ".safetensors", ".toml"), (
                f"README example names {token}: give it a stand-in in PICTURES or mark the example `# online`")
    if args[0] not in UNLIMITED and "--max-frames" not in args:
        args += LIMIT
    return args, outputs


class ExampleRun(NamedTuple):
    folder: Path
    outputs: list[str]  # the files the example names as its outputs
    result: subprocess.CompletedProcess[str]


def run_example(example: str, stand_ins: Path, folder: Path) -> ExampleRun:
    """`v2v …` as the example says, in `folder`, offline, with the README's hub ids mapped to the tiny models."""
    args, outputs = as_run(example, stand_ins)
    for output in outputs:
        (folder / output).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "V2V_MODEL_MAP": str(stand_ins / "models.json"), "OMP_NUM_THREADS": "1"}
    return ExampleRun(folder, outputs, subprocess.run([sys.executable, "-m", "v2v", *args], cwd=folder, env=env,
                                                      capture_output=True, text=True, timeout=600))


@pytest.fixture(scope="module")
def example_runs(stand_ins: Path) -> dict[str, ExampleRun]:
    """Every example run once, two at a time on one thread each: most of a run is importing, which a second
    core halves (the whole set: 198 s on this 2-core machine, shared; 213 CPU-seconds)."""
    folders = {example: stand_ins / f"example-{number}" for number, example in enumerate(readme_examples())}
    for folder in folders.values():
        folder.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {example: pool.submit(run_example, example, stand_ins, folder) for example, folder in folders.items()}
        return {example: run.result() for example, run in runs.items()}


@pytest.mark.parametrize("example", readme_examples())
def test_readme_example_runs(example: str, example_runs: dict[str, ExampleRun]) -> None:
    """Run as written but for its inputs, on the sample, with tiny models for the hub ids. An example marked
    `# online` must be one that needs the network: offline, it ends in one line and exit 1."""
    folder, outputs, result = example_runs[example]
    if ONLINE.search(example):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, f"marked online but ran offline: {result.stderr}"
        return
    assert result.returncode == 0, f"{example}\n{result.stderr}"
    missing = [output for output in outputs if not any(folder.glob(output.replace("%05d", "*")))]
    assert not missing, f"{example} made no {missing}"
    assert outputs or result.stdout.strip() or any(folder.iterdir()), f"{example} made nothing"  # e.g. preview
