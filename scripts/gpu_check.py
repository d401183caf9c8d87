"""The one script to run on a GPU machine: every stage kind of v2v at its real working size, beside the plain loop a
user would write for the same model, temporal on and off; one row per stage kind, a markdown table and one JSON.

    python scripts/gpu_check.py --out gpu.json                 # a CUDA machine, no network (about 8 minutes)
    python scripts/gpu_check.py --wheels bundle/ --out gpu.json  # first install the bundle (scripts/gpu_bundle.sh)
    python scripts/gpu_check.py --tiny --out tiny.json         # the same code paths, tiny models, on the CPU

Diffusion families are real-size models with random weights, built from their published configs directly on the
device (no download, no weights on disk): SD 1.5 + ControlNet, InstructPix2Pix and SD inpainting (SD 1.5-sized),
SDXL, FLUX.1-dev + a ControlNet (InstantX Union's 5 + 10 blocks), FLUX.1 Kontext, SD3.5 medium. Tokenizers are the
tests' small offline ones, with the real token lengths (77 for CLIP, 512/256 for T5). v2v's stage is handed the
built pipeline (`prebuilt`: the family's loader returns it; everything after loading is v2v's own path) and the
peer is the same pipeline object called once per frame, as diffusers' documentation does. Restoration stages use
the real weights v2v has (Real-ESRGAN x4plus, BasicVSR REDS4, FFDNet, RIFE 4.0); their peer is the bare network
called per frame (per clip for BasicVSR, its reference usage).

Each row: `stage`, `ok`, the model and size, marginal seconds a frame (t(1 + N) - t(1)) / N after a warm-up, for
v2v with temporal off and on and for the peer, the ratios to the peer, the peak device memory of the row
(`torch.cuda.max_memory_allocated`), and `finite` (no NaN/inf in any denoiser or network output, counted on the
device and read once a run). A stage that fails gets its row with the error; the rest still run. `--tiny` runs the
same functions with the tests' tiny models (`tests/tiny_*.py`) and small frames on the CPU: CI runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOT_BUILT = "not built yet"


def install_wheels(folder: str) -> None:
    """Install every wheel of `folder` (scripts/gpu_bundle.sh's) with pip, offline, before anything is imported."""
    wheels = sorted(str(path) for path in [*Path(folder).glob("*.whl"), *Path(folder).glob("weights/*.whl")])
    if not wheels:
        sys.exit(f"gpu_check: no wheels in {folder}")
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", folder, "--no-deps", *wheels]
    subprocess.run(command, check=True)


@dataclass
class Check:
    """What every row's function is handed."""

    device: Any
    dtype: Any
    tiny: bool
    frames: int  # N of the marginal: timed runs of 1 and 1 + N frames
    steps: int | None
    scratch: Path
    tiny_models: dict[str, Path] = field(default_factory=dict)

    def size(self, real: tuple[int, int], tiny: tuple[int, int] = (32, 32)) -> tuple[int, int]:
        """(height, width) of the frames: the real working size, or a tiny one."""
        return tiny if self.tiny else real


# --- measuring ------------------------------------------------------------------------------------------------


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_of(count: int, height: int, width: int, seed: int = 0) -> list[Any]:
    """`count` RGB uint8 frames of a smooth random texture panned 2 pixels a frame (motion flow can follow)."""
    import cv2
    import numpy as np

    step = 2
    texture = np.random.default_rng(seed).random((height, width + step * count, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return [(texture[:, i * step : i * step + width] * 255).round().astype(np.uint8) for i in range(count)]


def marginal(run: Callable[[list[Any]], list[Any]], frames: list[Any], extra: int, device: Any,
             first: int = 1) -> float:
    """Seconds a frame beyond the first: run on `first` frames (after a warm-up run on a device) and on `first` +
    `extra`."""
    if device.type != "cpu":
        run(frames[:first])  # warm-up: cuDNN's autotuning, lazy inits, compilation (--tiny: only time is saved)
    times = []
    for count in (first, first + extra):
        synchronize(device)
        start = time.perf_counter()
        run(frames[:count])
        synchronize(device)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / extra


class Finite:
    """Counts non-finite values in a module's outputs on the device (no read-back per call); `ok()` reads once."""

    def __init__(self) -> None:
        self.bad: Any = None
        self.handles: list[Any] = []

    def watch(self, module: Any) -> Finite:
        self.handles.append(module.register_forward_hook(self._hook))
        return self

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        import torch

        value = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
        if isinstance(value, torch.Tensor):
            count = (~torch.isfinite(value)).sum()
            self.bad = count if self.bad is None else self.bad + count

    def ok(self) -> bool:
        for handle in self.handles:
            handle.remove()
        return self.bad is None or int(self.bad) == 0


@contextlib.contextmanager
def peak_memory(device: Any, into: dict[str, Any]) -> Iterator[None]:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    into["peak_vram_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def timings(row: dict[str, Any], runs: dict[str, Callable[[list[Any]], list[Any]]], frames: list[Any],
            check: Check, first: int = 1) -> None:
    """Marginal seconds a frame of each contender into `row`, and each v2v contender's ratio to the peer."""
    for name, run in runs.items():
        row[f"{name}_s_per_frame"] = round(marginal(run, frames, check.frames, check.device, first), 4)
    peer = row.get("peer_s_per_frame")
    for name in runs:
        if name != "peer" and peer:
            row[f"{name}_vs_peer"] = round(row[f"{name}_s_per_frame"] / peer, 3)


# --- diffusion: real-size models on the device, or the tests' tiny ones ----------------------------------------


@contextlib.contextmanager
def building(device: Any, dtype: Any) -> Iterator[None]:
    """Modules made inside are initialised on `device` in `dtype` (not on the CPU first)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def tokenizers(scratch: Path) -> tuple[Any, Any]:
    """The tests' offline CLIP and T5 tokenizers, at the real models' lengths (77 and 512 tokens)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_diffusion import write_tiny_tokenizer
    from tiny_dit import write_tiny_t5_tokenizer
    from transformers import CLIPTokenizer, T5TokenizerFast

    write_tiny_tokenizer(scratch / "clip")
    write_tiny_t5_tokenizer(scratch / "t5")
    clip = CLIPTokenizer.from_pretrained(str(scratch / "clip"))
    t5 = T5TokenizerFast.from_pretrained(str(scratch / "t5"))
    clip.model_max_length, t5.model_max_length = 77, 512
    return clip, t5


def clip_text(tokenizer: Any, width: int, layers: int, heads: int, projection: bool = False,
              act: str = "quick_gelu") -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                            num_attention_heads=heads, max_position_embeddings=77, hidden_act=act,
                            projection_dim=width, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def t5_xxl() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                   feed_forward_proj="gated-gelu", is_encoder_decoder=False)).eval()  # fmt: skip


def vae(latent_channels: int, size: int, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=latent_channels,
                         sample_size=size, **extra).eval()  # fmt: skip


def real_pipeline(name: str, check: Check) -> Any:
    """The real-size pipeline `name` with random weights, built on the device."""
    import diffusers

    clip_tok, t5_tok = tokenizers(check.scratch / "tokenizers")
    # schedulers: on the host in float32, as the pipelines keep them
    ddim = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    euler = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                             steps_offset=1)  # fmt: skip
    flow_match = diffusers.FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True,
        shift=3.0)  # fmt: skip
    sd3_flow = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    with building(check.device, check.dtype):
        if name in ("sd", "instruct-pix2pix", "sd-inpaint"):
            channels = {"sd": 4, "instruct-pix2pix": 8, "sd-inpaint": 9}[name]
            unet = diffusers.UNet2DConditionModel(sample_size=64, in_channels=channels, cross_attention_dim=768)
            parts = dict(vae=vae(4, 512), text_encoder=clip_text(clip_tok, 768, 12, 12), tokenizer=clip_tok,
                         unet=unet.eval(), scheduler=ddim, safety_checker=None, feature_extractor=None,
                         requires_safety_checker=False)  # fmt: skip
            if name == "sd":
                controlnet = diffusers.ControlNetModel.from_unet(unet).eval()
                return diffusers.StableDiffusionControlNetImg2ImgPipeline(**parts, controlnet=controlnet)
            cls = {"instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
                   "sd-inpaint": "StableDiffusionInpaintPipeline"}[name]  # fmt: skip
            return getattr(diffusers, cls)(**parts)
        if name == "sdxl":
            unet = diffusers.UNet2DConditionModel(
                sample_size=128, block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816,
            ).eval()  # fmt: skip
            return diffusers.StableDiffusionXLImg2ImgPipeline(
                vae=vae(4, 1024, force_upcast=False), text_encoder=clip_text(clip_tok, 768, 12, 12),
                text_encoder_2=clip_text(clip_tok, 1280, 32, 20, projection=True, act="gelu"), tokenizer=clip_tok,
                tokenizer_2=clip_tok, unet=unet, requires_aesthetics_score=False, scheduler=euler,
            )  # fmt: skip
        if name in ("flux", "flux-kontext"):
            flux = dict(patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24,
                        joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                        axes_dims_rope=(16, 56, 56))  # fmt: skip
            parts = dict(
                transformer=diffusers.FluxTransformer2DModel(**flux, num_layers=19, num_single_layers=38).eval(),
                vae=vae(16, 1024, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
                        shift_factor=0.1159), text_encoder=clip_text(clip_tok, 768, 12, 12), tokenizer=clip_tok,
                text_encoder_2=t5_xxl(), tokenizer_2=t5_tok,
                scheduler=flow_match,
            )  # fmt: skip
            if name == "flux-kontext":
                return diffusers.FluxKontextPipeline(**parts)
            controlnet = diffusers.FluxControlNetModel(**flux, num_layers=5, num_single_layers=10).eval()
            return diffusers.FluxControlNetImg2ImgPipeline(**parts, controlnet=controlnet)
        if name == "sd3":
            transformer = diffusers.SD3Transformer2DModel(
                sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
            ).eval()  # fmt: skip
            return diffusers.StableDiffusion3Img2ImgPipeline(
                transformer=transformer, scheduler=sd3_flow,
                vae=vae(16, 1024, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305,
                        shift_factor=0.0609),
                text_encoder=clip_text(clip_tok, 768, 12, 12, projection=True), tokenizer=clip_tok,
                text_encoder_2=clip_text(clip_tok, 1280, 32, 20, projection=True, act="gelu"), tokenizer_2=clip_tok,
                text_encoder_3=t5_xxl(), tokenizer_3=t5_tok,
            )  # fmt: skip
    raise ValueError(f"no real-size build for {name}")


def tiny_pipeline(name: str, check: Check) -> tuple[Any, Path]:
    """The tests' tiny pipeline `name` (built once per run) and its folder."""
    import diffusers

    sys.path.insert(0, str(ROOT / "tests"))
    if not check.tiny_models:
        from tiny_diffusion import build_tiny_models
        from tiny_dit import build_tiny_flux, build_tiny_sd3
        from tiny_inpaint import build_tiny_inpaint

        unets = build_tiny_models(check.scratch / "unets")
        build_tiny_inpaint(unets, unets / "sd")
        dits = build_tiny_flux(check.scratch / "dits")
        build_tiny_sd3(dits)
        check.tiny_models.update(unets=unets, dits=dits)
    unets, dits = check.tiny_models["unets"], check.tiny_models["dits"]
    folder = {"sd": unets / "sd", "instruct-pix2pix": unets / "instruct-pix2pix", "sd-inpaint": unets / "sd-inpaint",
              "sdxl": unets / "sdxl", "flux": dits / "flux", "flux-kontext": dits / "flux-kontext",
              "sd3": dits / "sd3"}[name]  # fmt: skip
    cls = {"sd": "StableDiffusionControlNetImg2ImgPipeline",
           "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline", "sd-inpaint": "StableDiffusionInpaintPipeline",
           "sdxl": "StableDiffusionXLImg2ImgPipeline",
           "flux": "FluxControlNetImg2ImgPipeline", "flux-kontext": "FluxKontextPipeline",
           "sd3": "StableDiffusion3Img2ImgPipeline"}[name]  # fmt: skip
    extra: dict[str, Any] = {}
    if name == "sd":
        extra["controlnet"] = diffusers.ControlNetModel.from_pretrained(str(unets / "controlnet"))
    if name == "flux":
        extra["controlnet"] = diffusers.FluxControlNetModel.from_pretrained(str(dits / "flux-controlnet"))
    if name in ("sd", "instruct-pix2pix", "sd-inpaint"):
        extra["safety_checker"] = None
    pipe = getattr(diffusers, cls).from_pretrained(str(folder), **extra)
    return pipe.to(check.device, check.dtype), folder


def configs_folder(pipe: Any, folder: Path) -> Path:
    """A folder with the pipeline's model_index.json and its components' configs (no weights): what v2v's family
    detection reads."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {key: list(value) if isinstance(value, tuple) else value for key, value in dict(pipe.config).items()}
    index["_class_name"] = type(pipe).__name__
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, component in pipe.components.items():
        if component is None:
            continue
        if hasattr(component, "save_config"):  # diffusers models and schedulers
            component.save_config(str(folder / name))
        elif hasattr(getattr(component, "config", None), "save_pretrained"):  # transformers models
            component.config.save_pretrained(str(folder / name))
    return folder


@contextlib.contextmanager
def prebuilt(pipe: Any) -> Iterator[None]:
    """v2v's family loaders hand back `pipe` (and its ControlNet) instead of reading weights from disk."""
    from v2v.diffusion import registry

    load, load_controlnet = registry.Family.load, registry.Family.load_controlnet
    registry.Family.load = lambda self, *args, **kwargs: pipe  # type: ignore[method-assign]
    registry.Family.load_controlnet = lambda self, *args, **kwargs: pipe.controlnet  # type: ignore[method-assign]
    try:
        yield
    finally:
        registry.Family.load, registry.Family.load_controlnet = load, load_controlnet  # type: ignore[method-assign]


# stage kind -> (family build name, v2v config kind, real (height, width), whether it takes a ControlNet)
DIFFUSION = {
    "restyle-sd15-controlnet": ("sd", "restyle", (512, 512), True),
    "edit-instruct-pix2pix": ("instruct-pix2pix", "edit", (512, 512), False),
    "inpaint-sd15": ("sd-inpaint", "inpaint", (512, 512), False),
    "restyle-sdxl": ("sdxl", "restyle", (1024, 1024), False),
    "restyle-flux-controlnet": ("flux", "restyle", (1024, 1024), True),
    "edit-flux-kontext": ("flux-kontext", "edit", (1024, 1024), False),
    "restyle-sd35-medium": ("sd3", "restyle", (1024, 1024), False),
}


def diffusion_row(stage_kind: str, check: Check) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from v2v.diffusion.config import EditConfig, RestyleConfig
    from v2v.diffusion.stage import DiffusionStage
    from v2v.frames import Frame
    from v2v.inpaint.stage import InpaintConfig

    name, kind, real_size, controlnet = DIFFUSION[stage_kind]
    height, width = check.size(real_size)
    row: dict[str, Any] = {"stage": stage_kind, "family": name, "size": f"{width}x{height}"}
    if check.tiny:
        pipe, folder = tiny_pipeline(name, check)
    else:
        pipe = real_pipeline(name, check)
        folder = configs_folder(pipe, check.scratch / f"configs-{name}")
    pipe.set_progress_bar_config(disable=True)
    config_class = {"restyle": RestyleConfig, "edit": EditConfig, "inpaint": InpaintConfig}[kind]
    text = {"instruction": "make it a watercolour"} if kind == "edit" else {"prompt": "a watercolour painting"}
    settings: dict[str, Any] = dict(model=str(folder), seed=0, offload="none", device=str(check.device),
                                    dtype={torch.float16: "fp16", torch.bfloat16: "bf16"}.get(check.dtype, "fp32"),
                                    **text)  # fmt: skip
    if check.steps:  # else the family's default
        settings["steps"] = check.steps
    if controlnet:
        settings["controlnets"] = ["prebuilt"]
    frames = frames_of(1 + check.frames, height, width)
    mask = np.zeros((height, width), np.float32)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    finite = Finite()
    with prebuilt(pipe):
        stages = {temporal: DiffusionStage(config_class(**settings, temporal=temporal)) for temporal in (False, True)}
    finite.watch(stages[False].family.denoiser(pipe))
    config = stages[False].config
    row.update(steps=int(config.steps), strength=float(config.strength), guidance=float(config.guidance))

    def v2v(stage: DiffusionStage) -> Callable[[list[Any]], list[Any]]:
        if kind == "inpaint":  # the painter's part: the stage diffuses the masked frames
            return lambda images: (stage.bank.reset(), stage.diffuse(images, list(range(len(images))),
                                                                       masks=[mask] * len(images)))[1]  # fmt: skip
        return lambda images: [f.image for f in stage.process(iter(Frame(im, i) for i, im in enumerate(images)))]

    def peer(images: list[Any]) -> list[Any]:
        """The plain loop: the pipeline once a frame, as diffusers' docs call it."""
        import cv2

        out = []
        for index, image in enumerate(images):
            arguments: dict[str, Any] = dict(image=Image.fromarray(image), num_inference_steps=int(config.steps),
                                             guidance_scale=float(config.guidance), output_type="pt",
                                             generator=torch.Generator("cpu").manual_seed(index))  # fmt: skip
            arguments["prompt"] = config.text
            if kind != "edit":
                arguments["strength"] = float(config.strength)
            if controlnet:
                edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
                arguments["control_image"] = Image.fromarray(np.stack([edges] * 3, axis=-1))
            if kind == "inpaint":
                arguments["mask_image"] = Image.fromarray((mask * 255).astype(np.uint8))
            if name in ("flux", "flux-kontext", "sd3", "sd-inpaint"):
                arguments.update(height=height, width=width)
            if name == "flux-kontext":
                arguments.update(max_area=height * width, _auto_resize=False)
            if name == "instruct-pix2pix":
                arguments["image_guidance_scale"] = float(config.image_guidance or 1.5)
            with torch.inference_mode():
                out.append(pipe(**arguments).images[0].float().cpu())
        return out

    with peak_memory(check.device, row):
        timings(row, {"v2v_off": v2v(stages[False]), "v2v_on": v2v(stages[True]), "peer": peer}, frames, check)
    row["finite"] = finite.ok()
    row["ok"] = row["finite"]
    return row


def wan_row(stage_kind: str, check: Check) -> dict[str, Any]:
    """Wan2.1-VACE-1.3B: not measured yet, and the row says so (never a pass): the video family landed in v2v at the
    end of this script's work, and its Wan build (real-size and tiny) and plain-loop peer are not written."""
    from v2v.diffusion.registry import all_families

    if not any("wan" in family.name for family in all_families()):
        return {"stage": stage_kind, "ok": False, "status": NOT_BUILT, "error": "no Wan video family in v2v yet"}
    return {"stage": stage_kind, "ok": False, "status": NOT_BUILT,
            "error": "v2v has the Wan family; gpu_check's Wan build and peer are not written yet"}  # fmt: skip


# --- restoration: the real weights v2v has ---------------------------------------------------------------------


def restore_row(stage_kind: str, check: Check) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from v2v.frames import Frame, images_to_tensor, tensor_to_images

    row: dict[str, Any] = {"stage": stage_kind}
    finite = Finite()

    def through(stage: Any) -> Callable[[list[Any]], list[Any]]:
        return lambda images: [f.image for f in stage.process(iter(Frame(im, i) for i, im in enumerate(images)))]

    runs: dict[str, Callable[[list[Any]], list[Any]]]
    if stage_kind == "upscale-realesrgan-x4":
        from v2v.restore.upscale import UpscaleStage

        height, width = check.size((360, 640), (24, 32))
        row["model"] = "realesr-animevideov3-x4" if check.tiny else "realesrgan-x4plus"  # tiny: the compact SRVGG
        stage = UpscaleStage(row["model"], device=check.device)
        network = stage.upscaler.network
        finite.watch(network)
        dtype = next(network.parameters()).dtype

        def peer(images: list[Any]) -> list[Any]:
            with torch.inference_mode():
                return [tensor_to_images(network(images_to_tensor([im], check.device, dtype)).float())[0]
                        for im in images]  # fmt: skip

        runs = {"v2v_off": through(stage), "peer": peer}
    elif stage_kind == "video-sr-basicvsr":
        from v2v.restore.video_sr import VideoSRStage

        height, width = check.size((180, 320), (16, 16))
        stage = VideoSRStage("basicvsr-reds4", device=str(check.device))
        net = stage.network
        finite.watch(net)

        def peer(images: list[Any]) -> list[Any]:
            """BasicVSR's reference use: the whole clip at once, both branches."""
            with torch.inference_mode():
                x = images_to_tensor(images, check.device, stage.dtype)
                to_next, to_previous = net.flows(x)
                backward = net.backward_features(x, to_next)
                feature, forward = None, []
                for i in range(len(images)):
                    feature = net.forward_step(x[i : i + 1], feature, to_previous[i - 1 : i] if i else None)
                    forward.append(feature)
                return tensor_to_images(net.reconstruct(x, backward, torch.cat(forward)))

        runs = {"v2v_off": through(stage), "peer": peer}
        row["model"] = "basicvsr-reds4"
    elif stage_kind == "denoise-ffdnet":
        from v2v.restore.denoise import DenoiseStage

        height, width = check.size((720, 1280), (24, 32))
        off = DenoiseStage(sigma=15, temporal=False, device=str(check.device))
        on = DenoiseStage(sigma=15, temporal=True, device=str(check.device))
        network = off.network
        finite.watch(network)
        level = torch.full((1, 1, 1, 1), 15 / 255, device=check.device, dtype=off.dtype)

        def peer(images: list[Any]) -> list[Any]:
            with torch.inference_mode():
                return [tensor_to_images(network(images_to_tensor([im], check.device, off.dtype), level))[0]
                        for im in images]  # fmt: skip

        runs = {"v2v_off": through(off), "v2v_on": through(on), "peer": peer}
        row["model"] = "ffdnet-color"
    elif stage_kind == "interpolate-rife":
        from v2v.restore.interpolate import InterpolateStage
        from v2v.restore.rife import Interpolator

        height, width = check.size((720, 1280), (32, 32))
        stage = InterpolateStage(factor=2, device=str(check.device))
        rife = Interpolator(device=check.device)
        finite.watch(rife.net)

        def interpolated(images: list[Any]) -> list[Any]:
            from fractions import Fraction

            frames = [Frame(im, i, pts=i * 2, time_base=Fraction(1, 20)) for i, im in enumerate(images)]
            return [f.image for f in stage.process(iter(frames))]

        def peer(images: list[Any]) -> list[Any]:
            with torch.inference_mode():
                out = []
                step = rife.net.multiple(1.0)  # its sides must be multiples of this: padded, cut back
                for a, b in zip(images, images[1:], strict=False):
                    x0, x1 = (F.pad(images_to_tensor([im], check.device, rife.dtype),
                                    (0, -width % step, 0, -height % step), mode="replicate") for im in (a, b))
                    out.append(tensor_to_images(rife.net(x0, x1, 0.5)[..., :height, :width])[0])
                return out

        runs = {"v2v_off": interpolated, "peer": peer}
        row["model"] = "rife-4.0"
    else:
        raise ValueError(stage_kind)
    row["size"] = f"{width}x{height}"
    first = 2 if stage_kind == "interpolate-rife" else 1  # interpolation needs a pair
    frames = frames_of(first + check.frames, height, width)
    with peak_memory(check.device, row):
        timings(row, runs, frames, check, first)
    row["finite"] = finite.ok()
    row["ok"] = row["finite"]
    return row


CHECKS: dict[str, Callable[[str, Check], dict[str, Any]]] = {
    **dict.fromkeys(DIFFUSION, diffusion_row),
    "restyle-wan-vace-1.3b": wan_row,
    "upscale-realesrgan-x4": restore_row,
    "video-sr-basicvsr": restore_row,
    "denoise-ffdnet": restore_row,
    "interpolate-rife": restore_row,
}


# --- the run ---------------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    columns = ("stage", "ok", "size", "v2v_off_s_per_frame", "v2v_on_s_per_frame", "peer_s_per_frame",
               "v2v_off_vs_peer", "v2v_on_vs_peer", "peak_vram_gb", "finite", "error")  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(column, "")).replace("|", "/")[:80] for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device("cpu" if args.tiny else args.device)
    if args.tiny:  # one thread: on a shared CPU, two threads of tiny ops stall at their barriers (tests do the same)
        torch.set_num_threads(1)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device (use --tiny on the CPU)")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    from v2v.diffusion.stage import quiet_loading

    quiet_loading()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        frames = args.frames or (1 if args.tiny else 2)
        steps = args.steps if args.steps is not None else (2 if args.tiny else 8)  # 8: it all fits in ~8 minutes
        check = Check(device=device, dtype=dtype, tiny=args.tiny, frames=frames, steps=steps, scratch=Path(scratch))
        for stage_kind, function in CHECKS.items():
            if args.only and stage_kind not in args.only:
                continue
            start = time.perf_counter()
            try:
                row = function(stage_kind, check)
            except Exception as exc:  # a failing stage gets its row and the rest still run
                lines = str(exc).strip().splitlines() or [""]
                row = {"stage": stage_kind, "ok": False, "error": f"{type(exc).__name__}: {lines[0][:300]}"}
                if args.verbose:
                    traceback.print_exc()
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(f"{stage_kind}: {'ok' if row['ok'] else row.get('status') or row.get('error')} ({row['seconds']} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "dtype": str(dtype), "tiny": args.tiny, "marginal_frames": frames, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (CI)")
    parser.add_argument("--out", help="write the JSON here")
    parser.add_argument("--wheels", help="first install the wheels of this folder offline (scripts/gpu_bundle.sh)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, help="N of the marginal: runs of 1 and 1 + N frames (default 2; 1 with "
                                                   "--tiny)")
    parser.add_argument("--steps", type=int, help="steps before strength, for every family (default 8; 2 with --tiny; "
                                                  "0: each family's own, which takes far longer)")
    parser.add_argument("--only", nargs="*", help="these stage kinds only")
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failing stages")
    args = parser.parse_args()
    if args.wheels:
        install_wheels(args.wheels)
    sys.path.insert(0, str(ROOT))  # a checkout's v2v, when it is not installed
    report = run(args)
    print(table(report["rows"]))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if all(row["ok"] or row.get("status") == NOT_BUILT for row in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
