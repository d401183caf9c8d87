"""Tiny random diffusion models built from config, for tests and benchmarks on machines without weights.

(Kept in tests/, not in the package; `scripts/bench_restyle_common.py` puts this folder on its path.)

`build_tiny_models(folder)` writes, with `save_pretrained`, the same layouts a user's real downloads have:

- `folder/sd`: a Stable Diffusion 1.x-style pipeline folder (UNet, VAE with an 8x latent like SD's, a
  5-layer CLIP text model with hidden size 32, a byte-level BPE tokenizer, a DDIM scheduler);
- `folder/controlnet`: a ControlNet made from that UNet's config;
- `folder/controlnet-mismatch`: a ControlNet for a different UNet (cross-attention width 16);
- `folder/ip-adapter/models/ip-adapter_tiny.safetensors` with `models/image_encoder/` beside it, the
  layout of h94/IP-Adapter; `folder/ip-adapter-bare/ip-adapter_tiny.safetensors` has no image encoder;
- `folder/lora/pytorch_lora_weights.safetensors`: a rank-4 LoRA for the UNet (needs peft);
- `folder/depth`: a tiny DPT depth estimator with its image processor; `folder/pose`: a tiny ViTPose;
- `folder/sdxl` and `folder/controlnet-sdxl`: an SDXL-style pipeline and a ControlNet for it;
- `folder/instruct-pix2pix`: an InstructPix2Pix pipeline (the same UNet shape with 8 input channels: noise
  latents + the source image's latents), sharing the SD folder's VAE, text encoder and tokenizer;
- `folder/controlnet-flux`: a FLUX ControlNet (another family's, for refusals).

Where attention is made measurable: at the default init a random UNet's output hardly depends on its
self-attention, so `_tiny_unet` scales the `attn1` query/key/output weights by `SELF_ATTENTION_GAIN` (see there);
that is what lets the tests see cross-frame attention lower the warping error.

The weights are random: outputs are noise-like, but every code path (loading, ControlNet, IP-Adapter,
attention processors, schedulers) runs exactly as it does for real models.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

if TYPE_CHECKING:
    from v2v.diffusion.config import RestyleConfig
CROSS_ATTENTION_DIM = 32
SELF_ATTENTION_GAIN = 10.0
# the width of the tiny vision transformers (IP-Adapter image encoder, DPT depth model)
TINY_VISION_TRANSFORMER = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, image_size=32)


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins for bytes that CLIP's byte-level BPE uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(chr(byte))
        else:
            codes.append(chr(256 + extra))
            extra += 1
    return codes


def write_tiny_tokenizer(folder: Path) -> int:
    """A CLIP tokenizer whose vocabulary is every byte (alone and word-final) plus a few merges.

    Any text tokenizes (roughly one token per character), so long prompts overflow 77 tokens quickly.
    Returns the vocabulary size.
    """
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = _bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>")]
    vocab += ["".join(pair) for pair in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return len(vocab)


def _tiny_unet(in_channels: int) -> torch.nn.Module:
    """The tiny SD-style UNet (two levels, self- and cross-attention in the lower one), attention made to matter."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
    )
    # At the default init a random UNet's output hardly depends on its self-attention; larger weights there
    # make attention matter, as it does in trained models, so cross-frame attention has something to show.
    for name, module in unet.named_modules():
        if name.endswith("attn1"):
            for linear in (module.to_q, module.to_k):
                linear.weight.data *= SELF_ATTENTION_GAIN**0.5
            module.to_out[0].weight.data *= SELF_ATTENTION_GAIN
    return unet


def build_tiny_models(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny models described in the module docstring under `folder`; returns `folder`."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = _tiny_unet(in_channels=4)
    # Four blocks give SD's 8x latent, so the ControlNet's default conditioning embedding fits.
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = write_tiny_tokenizer(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=vocab_size,
            max_position_embeddings=77,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder / "sd"))

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    # ControlNet starts with zero convolutions (no effect at all); give them weights so it steers the UNet.
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    for conv in [*zero_convs, controlnet.controlnet_cond_embedding.conv_out]:
        torch.nn.init.normal_(conv.weight, std=0.2)
    controlnet.save_pretrained(str(folder / "controlnet"))
    other = dict(unet.config)
    other["cross_attention_dim"] = 16
    mismatch = ControlNetModel.from_unet(UNet2DConditionModel.from_config(other))
    mismatch.save_pretrained(str(folder / "controlnet-mismatch"))

    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(projection_dim=32, num_hidden_layers=2, patch_size=4, **TINY_VISION_TRANSFORMER)
    )
    models = folder / "ip-adapter" / "models"
    encoder.save_pretrained(str(models / "image_encoder"))
    weights = _tiny_ip_adapter(unet, image_embed_dim=32)
    from safetensors.torch import save_file

    save_file(weights, str(models / "ip-adapter_tiny.safetensors"))
    (folder / "ip-adapter-bare").mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "ip-adapter-bare" / "ip-adapter_tiny.safetensors"))
    _save_tiny_lora(pipe, folder / "lora")
    _save_tiny_depth(folder / "depth")
    _save_tiny_pose(folder / "pose")
    _save_tiny_sdxl(folder, vae, text_encoder.config, tokenizer)
    _save_tiny_pix2pix(folder / "instruct-pix2pix", vae, text_encoder, tokenizer, scheduler)
    _save_tiny_flux_controlnet(folder / "controlnet-flux")
    return folder


def _save_tiny_pix2pix(folder: Path, vae: object, text_encoder: object, tokenizer: object, scheduler: object) -> None:
    """An InstructPix2Pix pipeline: the tiny UNet with 8 input channels, SD's other components."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_tiny_unet(in_channels=8),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))


def _save_tiny_flux_controlnet(folder: Path) -> None:
    """A one-block FLUX ControlNet (a ControlNet of another family than SD's)."""
    from diffusers import FluxControlNetModel

    FluxControlNetModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(2, 2, 4),
    ).save_pretrained(str(folder))  # fmt: skip


def _save_tiny_sdxl(folder: Path, vae: torch.nn.Module, text_config: object, tokenizer: object) -> None:
    """`folder/sdxl`: an SDXL-style pipeline (two text encoders, `text_time` added conditions, 64-wide
    cross-attention), and `folder/controlnet-sdxl`, a ControlNet for it."""
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids of 8 + the pooled text of 32
        cross_attention_dim=2 * CROSS_ATTENTION_DIM,  # the two text encoders' states side by side
    )
    config = CLIPTextConfig(**{**text_config.to_dict(), "projection_dim": CROSS_ATTENTION_DIM})  # type: ignore[attr-defined]
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
    )
    pipe.save_pretrained(str(folder / "sdxl"))
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).save_pretrained(
        str(folder / "controlnet-sdxl")
    )


def _save_tiny_depth(folder: Path) -> None:
    """A 4-layer DPT depth estimator and its image processor (what `--depth-model` loads)."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        num_hidden_layers=4,
        patch_size=8,
        **TINY_VISION_TRANSFORMER,
        neck_hidden_sizes=[8, 16, 16, 16],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        reassemble_factors=[4, 2, 1, 0.5],
        initializer_range=0.1,  # the default (0.02) gives an all-but-constant random depth map
    )
    DPTForDepthEstimation(config).save_pretrained(str(folder))
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(str(folder))


def _save_tiny_pose(folder: Path) -> None:
    """A 2-layer ViTPose (17 COCO keypoints) and its image processor (what `--pose-model` loads)."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    backbone = VitPoseBackboneConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=[64, 48], patch_size=[8, 8], out_indices=[2],
    )  # fmt: skip
    config = VitPoseConfig(backbone_config=backbone, scale_factor=4, use_simple_decoder=True, num_labels=17)
    VitPoseForPoseEstimation(config).save_pretrained(str(folder))
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(str(folder))


def _tiny_ip_adapter(unet: torch.nn.Module, image_embed_dim: int) -> dict[str, torch.Tensor]:
    """An IP-Adapter state dict in the original layout `load_ip_adapter` reads from a .safetensors file:
    `image_proj.proj.*`/`image_proj.norm.*` (4 image tokens) and `ip_adapter.{1,3,5,...}.to_{k,v}_ip.weight`,
    one pair per cross-attention layer in `unet.attn_processors` order."""
    dim = unet.config.cross_attention_dim
    weights = {
        "image_proj.proj.weight": torch.randn(4 * dim, image_embed_dim) * 0.1,
        "image_proj.proj.bias": torch.zeros(4 * dim),
        "image_proj.norm.weight": torch.ones(dim),
        "image_proj.norm.bias": torch.zeros(dim),
    }
    key_id = 1
    for name, _ in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            continue
        hidden = attention_width(unet, name)
        weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, dim) * 0.1
        weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, dim) * 0.1
        key_id += 2
    return weights


def _save_tiny_lora(pipe: object, folder: Path) -> None:
    """A rank-4 LoRA on the UNet's attention projections, saved the way diffusers' trainers save one."""
    try:
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict
    except ImportError:  # LoRA needs peft; the other tiny models do not
        return
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    unet = pipe.unet  # type: ignore[attr-defined]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, parameter in unet.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); make it change the output
            torch.nn.init.normal_(parameter, std=0.05)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=layers)
    unet.delete_adapters("default")


# --- what the diffusion test modules share (import the fixtures into a module to use them there) ---------------

_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models, built once per test process whichever module asks first."""
    if "models" not in _BUILT:
        _BUILT["models"] = build_tiny_models(tmp_path_factory.mktemp("tiny-diffusion"))
    return _BUILT["models"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on this shared 2-core machine two threads of tiny ops can stall for tens of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sd_config(tiny: Path, **overrides: object) -> RestyleConfig:
    """A restyle config on the tiny SD model, quick to run (2 steps at strength 0.75); `overrides` win."""
    from v2v.diffusion.config import RestyleConfig

    values: dict[str, object] = dict(
        model=str(tiny / "sd"), prompt="a watercolour", steps=2, strength=0.75, guidance=5.0, seed=3
    )
    values.update(overrides)
    return RestyleConfig(**values)  # type: ignore[arg-type]


def frames(count: int = 3, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """`count` frames of conftest's moving pattern, RGB uint8."""
    from conftest import moving_pattern

    return [moving_pattern(i, width, height) for i in range(count)]


def translating(count: int = 6, width: int = 64, height: int = 48, step: int = 2) -> list[np.ndarray]:
    """`count` frames of a smooth random texture panned `step` pixels to the left a frame, RGB uint8: motion the
    flow can follow everywhere but at the right edge."""
    import cv2

    texture = np.random.default_rng(7).random((height, width + step * count, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return [(texture[:, i * step : i * step + width] * 255).round().astype(np.uint8) for i in range(count)]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """The largest difference of any pixel between two lists of images, in uint8 levels."""
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


def attention_width(unet: torch.nn.Module, name: str) -> int:
    """The hidden width of the UNet attention layer `name` (an `attn_processors` key): what an IP-Adapter's
    to_k_ip/to_v_ip project to there."""
    if name.startswith("mid_block"):
        return unet.config.block_out_channels[-1]
    if name.startswith("up_blocks"):
        return list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
    return unet.config.block_out_channels[int(name[len("down_blocks.")])]
