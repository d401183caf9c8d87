"""Tiny random diffusion-transformer (DiT) models built from config, saved with `save_pretrained` in the layouts
real downloads have, for tests and benchmarks on machines without weights.

`build_tiny_flux(folder)` writes:

- `folder/flux`: a FLUX.1-dev-shaped pipeline folder: `FluxTransformer2DModel` (patch 1, one double- and one
  single-stream block, 2 heads of 16, guidance embedding), a VAE with FLUX's 8x downsampling into 16 latent
  channels (so a 64x48 frame is 12 image tokens after 2x2 packing), a CLIP text model and a T5 encoder (both
  32 wide) with their tokenizers written offline, and a flow-matching Euler scheduler;
- `folder/flux-kontext`: the same models as a FLUX.1 Kontext (instruction editing) pipeline folder;
- `folder/flux-controlnet`: a `FluxControlNetModel` for it, its zero-initialised output layers given weights
  so that it steers the transformer; `folder/flux-controlnet-union`: a union ControlNet (`num_mode=4`);
- `folder/flux-controlnet-zero`: one as diffusers initialises it (zero output layers: it adds nothing);
- `folder/flux-controlnet-mismatch`: a FLUX ControlNet for a transformer of another text width;
- `folder/flux-redux`: a FLUX Redux prior (SigLIP image encoder + Redux embedder, no text encoders);
- `folder/flux-ip-adapter/ip_adapter.safetensors`: a FLUX IP-Adapter in XLabs-AI's layout, with its CLIP image
  encoder in `image_encoder/` beside it.

Where attention is made measurable: at the default init a random transformer's output hardly depends on
which tokens it attends to. `_sharpen_attention` scales the RMS-norm weights of every query/key (so the
attention logits are sharper, as in trained models) and the attention output projections, so cross-frame
attention has something to show (the warping-error test of `tests/test_diffusion_dit.py` relies on it).
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
import torch

TEXT_WIDTH = 32  # hidden size of the tiny CLIP and T5 encoders
T5_TOKENS = 16  # the tiny T5 tokenizer's limit (FLUX pads prompts to it: 16 text tokens, not 512)
QK_GAIN = 5.0  # scale of the query/key RMS-norm weights (logits grow by its square)
OUT_GAIN = 30.0  # scale of the attention output projections


def write_tiny_t5_tokenizer(folder: Path) -> int:
    """A T5 tokenizer (SentencePiece-style Unigram: `<pad>`=0, `</s>`=1, `<unk>`=2, then word-initial and
    inner characters) written offline with the `tokenizers` library. Returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in string.ascii_lowercase]
    pieces += [(c, -4.0) for c in string.ascii_letters + string.digits + string.punctuation]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
        model_max_length=T5_TOKENS,
    )  # fmt: skip
    fast.save_pretrained(str(folder))
    return len(pieces)


def tiny_clip_text(folder: Path) -> tuple[object, object]:
    """A 2-layer CLIP text model (32 wide, projection 32) and its byte-level BPE tokenizer."""
    from tiny_diffusion import write_tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = write_tiny_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    model = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, hidden_size=TEXT_WIDTH, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size, max_position_embeddings=77,
            projection_dim=TEXT_WIDTH,
        )
    )  # fmt: skip
    return model, tokenizer


def tiny_t5(folder: Path, width: int = TEXT_WIDTH) -> tuple[object, object]:
    """A 2-layer T5 encoder (d_model `width`) and its Unigram tokenizer."""
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab_size = write_tiny_t5_tokenizer(folder)
    model = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size, d_model=width, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    )  # fmt: skip
    return model, T5TokenizerFast.from_pretrained(str(folder))


def tiny_dit_vae(latent_channels: int = 16) -> torch.nn.Module:
    """A VAE with 8x downsampling into `latent_channels` channels, without quant convs (FLUX/SD3 layout)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0,
        scaling_factor=3.0,  # about 1 / the std of this random encoder's latents, as real VAEs' factors are
    )
    # A trained VAE's posterior is narrow; a random one's log-variance is ~0, so a sampled latent would be
    # mostly noise and img2img would hardly see the frame. Narrow it (std e^-6) as training does.
    logvar = vae.encoder.conv_out
    logvar.weight.data[latent_channels:] = 0.0
    logvar.bias.data[latent_channels:] = -12.0
    return vae


def _sharpen_attention(model: torch.nn.Module) -> None:
    """Make attention matter in a random transformer: sharper query/key norms, louder attention outputs."""
    for name, module in model.named_modules():
        if not name.endswith(("attn", "attn2")):
            continue
        for norm in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            weight = getattr(getattr(module, norm, None), "weight", None)
            if weight is not None:
                weight.data *= QK_GAIN
        to_out = getattr(module, "to_out", None)
        if to_out is not None:
            to_out[0].weight.data *= OUT_GAIN
    for block in getattr(model, "single_transformer_blocks", []):  # FLUX: attention output enters proj_out first
        block.proj_out.weight.data[:, : block.attn.inner_dim] *= OUT_GAIN


FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,  # 16 latent channels packed 2x2
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=TEXT_WIDTH,
    pooled_projection_dim=TEXT_WIDTH,
    guidance_embeds=True,
    axes_dims_rope=[4, 6, 6],
)


def _steer(controlnet: torch.nn.Module) -> None:
    """A ControlNet starts with zero output layers (no effect at all); give them weights so it steers."""
    for name, parameter in controlnet.named_parameters():
        if name.startswith(("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder")):
            torch.nn.init.normal_(parameter, std=0.2)


_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `build_tiny_flux` writes, built once per test process whichever module asks first (import the
    fixture into a module to use it there)."""
    if "flux" not in _BUILT:
        _BUILT["flux"] = build_tiny_flux(tmp_path_factory.mktemp("tiny-dit"))
    return _BUILT["flux"]


def build_tiny_flux(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny FLUX models described in the module docstring under `folder`; returns `folder`."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxControlNetModel,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**FLUX_TRANSFORMER)
    _sharpen_attention(transformer)
    with tempfile.TemporaryDirectory() as scratch:
        clip, clip_tokenizer = tiny_clip_text(Path(scratch) / "clip")
        t5, t5_tokenizer = tiny_t5(Path(scratch) / "t5")
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True
        ),
        vae=tiny_dit_vae(16),
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(str(folder / "flux"))
    FluxKontextPipeline(**pipe.components).save_pretrained(str(folder / "flux-kontext"))
    controlnet_config = {key: value for key, value in FLUX_TRANSFORMER.items() if key != "guidance_embeds"}
    controlnet = FluxControlNetModel(**controlnet_config, guidance_embeds=True)
    _steer(controlnet)
    controlnet.save_pretrained(str(folder / "flux-controlnet"))
    union = FluxControlNetModel(**controlnet_config, guidance_embeds=True, num_mode=4)
    _steer(union)
    union.save_pretrained(str(folder / "flux-controlnet-union"))
    # diffusers' own init: zero output layers, a ControlNet that adds nothing whatever its scale
    FluxControlNetModel(**controlnet_config, guidance_embeds=True).save_pretrained(str(folder / "flux-controlnet-zero"))
    other = {**controlnet_config, "joint_attention_dim": 16}
    FluxControlNetModel(**other).save_pretrained(str(folder / "flux-controlnet-mismatch"))
    _save_tiny_flux_ip_adapter(folder / "flux-ip-adapter", transformer)
    _save_tiny_redux(folder / "flux-redux")
    return folder


def _save_tiny_redux(folder: Path) -> None:
    """A FLUX Redux prior folder as black-forest-labs/FLUX.1-Redux-dev ships it (image encoder, its processor and
    the embedder, no text encoders): a 2-layer SigLIP (32 wide, 64 tokens of a 32x32 image) and a `ReduxImageEncoder`
    into the tiny T5's width."""
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    encoder = SiglipVisionModel(
        SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=4)
    )  # fmt: skip
    embedder = ReduxImageEncoder(redux_dim=32, txt_in_features=TEXT_WIDTH)
    for parameter in embedder.parameters():  # louder image tokens, so the reference shows in the result
        parameter.data *= 5.0
    prior = FluxPriorReduxPipeline(
        image_encoder=encoder,
        feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        image_embedder=embedder,
    )
    prior.save_pretrained(str(folder))


def _save_tiny_flux_ip_adapter(folder: Path, transformer: torch.nn.Module) -> None:
    """A FLUX IP-Adapter in XLabs-AI's layout (`ip_adapter_proj_model.*`: 4 image tokens of the text width;
    `double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj.*` per double-stream block) with a tiny CLIP
    image encoder in `image_encoder/` beside it."""
    from safetensors.torch import save_file
    from tiny_diffusion import TINY_VISION_TRANSFORMER
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    text, inner, image = TEXT_WIDTH, transformer.config.num_attention_heads * transformer.config.attention_head_dim, 32
    weights = {
        "ip_adapter_proj_model.proj.weight": torch.randn(4 * text, image) * 0.3,
        "ip_adapter_proj_model.proj.bias": torch.zeros(4 * text),
        "ip_adapter_proj_model.norm.weight": torch.ones(text),
        "ip_adapter_proj_model.norm.bias": torch.zeros(text),
    }
    for block in range(transformer.config.num_layers):
        for kind in ("k", "v"):
            prefix = f"double_blocks.{block}.processor.ip_adapter_double_stream_{kind}_proj"
            weights[f"{prefix}.weight"] = torch.randn(inner, text) * 0.3
            weights[f"{prefix}.bias"] = torch.zeros(inner)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "ip_adapter.safetensors"))
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(projection_dim=image, num_hidden_layers=2, patch_size=4, **TINY_VISION_TRANSFORMER)
    )
    encoder.save_pretrained(str(folder / "image_encoder"))


SD3_TRANSFORMER = dict(
    sample_size=32,
    patch_size=2,
    in_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=2 * TEXT_WIDTH,  # T5's width; the two CLIPs' states side by side are padded to it
    caption_projection_dim=32,
    pooled_projection_dim=2 * TEXT_WIDTH,  # the two CLIPs' pooled outputs side by side
    out_channels=16,
    pos_embed_max_size=32,
    qk_norm="rms_norm",
    dual_attention_layers=(0,),  # SD3.5 medium's image-only second attention, in the first block
)


def build_tiny_sd3(folder: str | Path, seed: int = 0) -> Path:
    """`folder/sd3`: an SD3.5-medium-shaped pipeline folder: `SD3Transformer2DModel` (patch 2, two joint blocks, the
    first with the image-only second attention, RMS qk-norm), the 16-channel VAE, two CLIP text models with
    projections and a T5 encoder (64 wide) with their tokenizers written offline, a flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**SD3_TRANSFORMER)
    _sharpen_attention(transformer)
    with tempfile.TemporaryDirectory() as scratch:
        clip, clip_tokenizer = tiny_clip_text(Path(scratch) / "clip")
        clip_2 = CLIPTextModelWithProjection(clip.config)  # type: ignore[attr-defined]
        clip = CLIPTextModelWithProjection(clip.config)  # type: ignore[attr-defined]
        t5, t5_tokenizer = tiny_t5(Path(scratch) / "t5", width=2 * TEXT_WIDTH)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_dit_vae(16),
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=clip_2,
        tokenizer_2=clip_tokenizer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(str(folder / "sd3"))
    return folder


QWEN_TRANSFORMER = dict(
    patch_size=2,
    in_channels=64,  # 16 latent channels packed 2x2
    out_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=16,  # the tiny Qwen2.5-VL's width
    guidance_embeds=False,
    axes_dims_rope=(8, 4, 4),
)


def write_tiny_qwen_processor(folder: Path) -> object:
    """A Qwen2-VL processor written offline: a byte-level BPE Qwen2 tokenizer (every byte, no merges, Qwen's chat
    and vision special tokens) and an image processor that keeps images under 112x112 pixels. Returns it."""
    from tiny_diffusion import _bytes_to_unicode
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(_bytes_to_unicode())}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    fast = Qwen2TokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, additional_special_tokens=specials)  # fmt: skip
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=fast,
        video_processor=Qwen2VLVideoProcessor(),
    )
    processor.save_pretrained(str(folder))
    return Qwen2VLProcessor.from_pretrained(str(folder))


def build_tiny_qwen_image_edit(folder: str | Path, seed: int = 0) -> Path:
    """`folder/qwen-image-edit`: a Qwen-Image-Edit-shaped pipeline folder: `QwenImageTransformer2DModel` (two
    double-stream blocks), a Qwen-Image 3D-causal VAE (8x, 16 channels), a 2-layer Qwen2.5-VL (16 wide, with a
    2-layer vision tower) and its processor written offline, a flow-matching scheduler."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(**QWEN_TRANSFORMER)
    _sharpen_attention(transformer)
    with tempfile.TemporaryDirectory() as scratch:
        processor = write_tiny_qwen_processor(Path(scratch))
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    ids = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    text = {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "rope_theta": 1000000.0, "vocab_size": len(tokenizer),
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}}  # fmt: skip
    vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, hidden_size=16, vocab_size=len(tokenizer),
                              vision_start_token_id=ids[0], vision_end_token_id=ids[1], image_token_id=ids[2],
                              video_token_id=ids[3], bos_token_id=None, eos_token_id=None)  # fmt: skip
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], latents_mean=[0.0] * 16,
                                 latents_std=[1.0] * 16)  # fmt: skip
    pipe = QwenImageEditPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=Qwen2_5_VLForConditionalGeneration(config),
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )
    pipe.save_pretrained(str(folder / "qwen-image-edit"))
    return folder
