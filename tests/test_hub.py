"""Hub ids download as diffusers' `from_pretrained` does, tried against tests/fake_hub.py on 127.0.0.1.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so each download runs in a
subprocess with them set; the server logs every request it gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

import tiny_diffusion  # noqa: E402
from conftest import write_clip  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

from v2v.diffusion.hub import CONFIGS, wanted_files  # noqa: E402
from v2v.diffusion.models import image_encoder_files  # noqa: E402

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
ROOT = Path(__file__).resolve().parent.parent
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes a download in chunks of 10 MiB: a cut resumes from the last one


def hub_env(url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a run against the fake hub: its endpoint, an empty cache, the hub on."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "PYTHONPATH": path,
            **extra}  # fmt: skip


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def repos(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny models as hub repos, with files a download must leave alone beside them: a single-file checkpoint
    at the top of the pipeline, a .bin and an fp16 copy of the UNet, a safety checker, a README, SDXL's encoder."""
    root = tmp_path_factory.mktemp("repos")
    sd = root / "tiny-sd"
    shutil.copytree(tiny / "sd", sd)
    for junk in ("v1-5-pruned.safetensors", "unet/diffusion_pytorch_model.bin", "safety_checker/model.safetensors",
                 "unet/diffusion_pytorch_model.fp16.safetensors", "README.md"):  # fmt: skip
        (sd / junk).parent.mkdir(exist_ok=True)
        (sd / junk).write_bytes(b"never fetched")
    adapter = root / "IP-Adapter"
    shutil.copytree(tiny / "ip-adapter", adapter)
    (adapter / "models" / "ip-adapter_tiny.safetensors").rename(adapter / "models" / "ip-adapter_sd15.safetensors")
    (adapter / "models" / "image_encoder" / "pytorch_model.bin").write_bytes(b"never fetched")
    (adapter / "sdxl_models" / "image_encoder").mkdir(parents=True)
    (adapter / "sdxl_models" / "image_encoder" / "model.safetensors").write_bytes(b"never fetched")
    big = root / "big"
    big.mkdir()
    (big / "weights.safetensors").write_bytes(np.random.default_rng(0).bytes(CHUNK + CHUNK // 2))
    return {"test-org/tiny-sd": sd, "test-org/tiny-controlnet": tiny / "controlnet",
            "test-org/tiny-lora": tiny / "lora", "h94/IP-Adapter": adapter, "test-org/big": big}  # fmt: skip


JUNK = b"never fetched"  # the files a download must leave on the hub


def test_restyle_downloads_hub_ids_and_runs(repos: dict[str, Path], tmp_path: Path) -> None:
    """`--model`, `--controlnet`, `--lora` and the default IP-Adapter (h94/IP-Adapter's ip-adapter_sd15 and its
    image encoder) by hub id, into an empty cache: the size is logged first, only what loads is fetched, and the
    run makes its frames. A second run takes them from the cache without a request."""
    from PIL import Image

    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "style.png")
    args = ["-m", "v2v", "restyle", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "test-org/tiny-sd",
            "--controlnet", "test-org/tiny-controlnet", "--lora", "test-org/tiny-lora", "--ip-adapter",
            str(tmp_path / "style.png"), "--prompt", "a watercolour", "--steps", "2", "--threads", "1"]  # fmt: skip
    with FakeHub(repos) as hub:
        env = hub_env(hub.url, tmp_path / "home")
        result = run(args, env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "wrote" in result.stderr and "2 frames" in result.stderr
        real = [p for p in hub.files("test-org/tiny-sd").values() if p.read_bytes() != JUNK]
        size = sum(p.stat().st_size for p in real) / 1e6
        assert f"downloading base model 'test-org/tiny-sd': {len(real)} files, {size:.1f} MB" in result.stderr
        assert "downloading ControlNet 'test-org/tiny-controlnet': 2 files" in result.stderr
        assert "downloading IP-Adapter 'h94/IP-Adapter/models/ip-adapter_sd15.safetensors': 3 files" in result.stderr
        fetched = hub.fetched()
        expected = {"test-org/tiny-sd/unet/diffusion_pytorch_model.safetensors",
                    "test-org/tiny-lora/pytorch_lora_weights.safetensors",
                    "h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
                    "h94/IP-Adapter/models/image_encoder/model.safetensors"}  # fmt: skip
        assert expected <= set(fetched) and len(fetched) == len(set(fetched)) == len(real) + 2 + 1 + 3
        assert not any(hub.file(path).read_bytes() == JUNK for path in fetched)

        hub.requests.clear()
        again = run([*args[:5], str(tmp_path / "again.mp4"), *args[6:]], env)
        assert again.returncode == 0, again.stderr[-2000:]
        assert hub.requests == [] and "downloading" not in again.stderr


@pytest.mark.parametrize("offline", [["--offline"], {"HF_HUB_OFFLINE": "1"}], ids=["flag", "env"])
def test_offline_refuses_a_model_not_in_the_cache(
    repos: dict[str, Path], tmp_path: Path, offline: list[str] | dict[str, str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    flags, extra = (offline, {}) if isinstance(offline, list) else ([], offline)
    with FakeHub(repos) as hub:
        result = run(["-m", "v2v", "restyle", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "test-org/tiny-sd",
                      "--prompt", "x", *flags], hub_env(hub.url, tmp_path / "home", **extra))  # fmt: skip
        assert hub.requests == []
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.count("\n") == 0 and "nor in the Hugging Face cache (offline)" in error
    assert "hf download test-org/tiny-sd" in error
    assert not (tmp_path / "out.mp4").exists()


def test_unreachable_hub_is_one_line_naming_the_model(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    env = hub_env("http://127.0.0.1:9", tmp_path / "home")  # the discard port: nothing listens there
    result = run(["-m", "v2v", "restyle", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "test-org/tiny-sd",
                  "--prompt", "x"], env)  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.count("\n") == 0 and "cannot download base model 'test-org/tiny-sd'" in error
    assert "--offline" in error and "hf download test-org/tiny-sd" in error


RESOLVE = """
import sys
from v2v.diffusion.models import resolve_path
from v2v.errors import ModelError
try:
    print(resolve_path(sys.argv[1], "LoRA"))
except ModelError as error:
    sys.exit(f"error: {error}")
"""


def test_what_the_hub_lacks_is_one_line(repos: dict[str, Path], tmp_path: Path) -> None:
    with FakeHub(repos) as hub:
        env = hub_env(hub.url, tmp_path / "home")
        no_repo = run(["-c", RESOLVE, "test-org/nothing"], env)
        no_file = run(["-c", RESOLVE, "test-org/tiny-lora/other.safetensors"], env)
    assert no_repo.returncode == no_file.returncode == 1
    assert no_repo.stderr == (f"error: LoRA 'test-org/nothing' is neither a local path nor a model on the Hugging Face "
                              f"hub ({hub.url}; a private one needs `hf auth login`)\n")  # fmt: skip
    assert no_file.stderr == ("error: LoRA 'test-org/tiny-lora/other.safetensors': test-org/tiny-lora on the hub has "
                              "no other.safetensors\n")  # fmt: skip


def test_a_download_cut_half_way_resumes(repos: dict[str, Path], tmp_path: Path) -> None:
    """The connection drops after 1.25 chunks of a 1.5-chunk file: huggingface_hub asks again from the chunk it
    kept (Range: bytes=N-), and the file in the cache is the served one, byte for byte. A snapshot with a file
    missing (a run stopped between files) is completed by the next run, which fetches only that file."""
    served = repos["test-org/big"] / "weights.safetensors"
    with FakeHub(repos) as hub:
        hub.cut("test-org/big/weights.safetensors", after=CHUNK + CHUNK // 4)
        env = hub_env(hub.url, tmp_path / "home")
        result = run(["-c", RESOLVE, "test-org/big/weights.safetensors"], env)
        assert result.returncode == 0, result.stderr[-2000:]
        gets = [span for method, path, span in hub.requests if method == "GET" and path.endswith("weights.safetensors")]
        assert gets == [None, f"bytes={CHUNK}-"]
        assert Path(result.stdout.strip()).read_bytes() == served.read_bytes()

        result = run(["-c", RESOLVE, "test-org/tiny-sd"], env)
        weights = Path(result.stdout.strip()) / "vae" / "diffusion_pytorch_model.safetensors"
        blob = weights.resolve()
        weights.unlink()  # as if the run had stopped before this file: neither its link nor its blob
        blob.unlink()
        hub.requests.clear()
        result = run(["-c", RESOLVE, "test-org/tiny-sd"], env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert hub.fetched() == ["test-org/tiny-sd/vae/diffusion_pytorch_model.safetensors"]
        assert weights.read_bytes() == hub.file(hub.fetched()[0]).read_bytes()


# --- what a download fetches ---------------------------------------------------------------------------------


PIPELINE = [
    "README.md", ".gitattributes", "model_index.json", "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt",
    "feature_extractor/preprocessor_config.json", "safety_checker/config.json", "safety_checker/model.safetensors",
    "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin", "tokenizer/merges.txt",
    "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.non_ema.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
    "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json", "tokenizer_2/spiece.model",
]  # fmt: skip


def test_a_pipeline_download_takes_one_copy_of_each_weight() -> None:
    assert wanted_files(PIPELINE) == sorted([
        "model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors", "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.json", "tokenizer_2/spiece.model",
    ])  # fmt: skip
    # a single-file checkpoint named inside the repo: that file alone; its configs alone for --model-config
    assert wanted_files(PIPELINE, "v1-5-pruned.ckpt") == ["v1-5-pruned.ckpt"]
    assert all(name.endswith((".json", ".txt", ".model")) for name in wanted_files(PIPELINE, files=CONFIGS))
    assert "unet/config.json" in wanted_files(PIPELINE, files=CONFIGS)
    assert wanted_files(PIPELINE, "unet") == ["unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert wanted_files(PIPELINE, "nothing/here") == []


def test_a_model_without_safetensors_takes_its_bin_and_a_named_file_its_neighbours() -> None:
    transformers_model = ["config.json", "preprocessor_config.json", "pytorch_model.bin", "tf_model.h5",
                          "flax_model.msgpack", "onnx/model.onnx"]  # fmt: skip
    assert wanted_files(transformers_model) == ["config.json", "preprocessor_config.json", "pytorch_model.bin"]
    adapter = ["models/ip-adapter_sd15.safetensors", "models/ip-adapter_sd15.bin",
               "models/ip-adapter-plus_sd15.safetensors", "models/image_encoder/config.json",
               "models/image_encoder/model.safetensors", "models/image_encoder/pytorch_model.bin",
               "sdxl_models/image_encoder/model.safetensors"]  # fmt: skip
    named = "models/ip-adapter_sd15.safetensors"
    assert wanted_files(adapter, named, image_encoder_files(named, None)) == [
        named, "models/image_encoder/config.json", "models/image_encoder/model.safetensors"
    ]
    assert image_encoder_files(named, "openai/clip-vit-large-patch14") is None
    assert wanted_files(adapter, named) == [named]
    assert wanted_files(adapter, "models") == [  # a folder: all it holds, one copy each
        "models/image_encoder/config.json", "models/image_encoder/model.safetensors",
        "models/ip-adapter-plus_sd15.safetensors", named,
    ]  # fmt: skip
