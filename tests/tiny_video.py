"""Tiny random video diffusion models built from config (as diffusers' own Wan tests build them), saved with
`save_pretrained` in the layouts real downloads have, for tests and benchmarks on machines without weights.

`build_tiny_wan(folder)` writes `folder/wan`, a `WanVideoToVideoPipeline` folder: `WanTransformer3DModel` (patch
1x2x2, two blocks of 2 heads of 12), `AutoencoderKLWan` with Wan's real compression (4x in time, 8x in space: a
frame rule of 4k+1 and sides of 16), a 2-layer UMT5 encoder (32 wide) with a T5 tokenizer written offline, and
Wan's flow-matching UniPC scheduler. `build_tiny_wan_vace(folder)` writes `folder/wan-vace`, a `WanVACEPipeline`
folder: the same parts with a `WanVACETransformer3DModel` (VACE blocks at layers 0 and 1, 96 context channels).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_dit import TEXT_WIDTH, write_tiny_t5_tokenizer


def tiny_umt5(folder: Path) -> tuple[object, object]:
    """A 2-layer UMT5 encoder (d_model 32) and its Unigram tokenizer."""
    from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

    vocab_size = write_tiny_t5_tokenizer(folder)
    model = UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size, d_model=TEXT_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    )  # fmt: skip
    return model, T5TokenizerFast.from_pretrained(str(folder))


def tiny_wan_vae() -> torch.nn.Module:
    """Wan's causal video VAE at its real compression (4x temporal, 8x spatial), 16 latent channels."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])  # fmt: skip


# the tiny Wan transformer's shape, shared by the Wan, Wan VACE and (with 32 input channels) Lucy Edit builders
TINY_WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
    text_dim=TEXT_WIDTH, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
)  # fmt: skip


def build_tiny_wan(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny Wan video-to-video pipeline folder under `folder`; returns `folder/wan`."""
    from diffusers import UniPCMultistepScheduler, WanTransformer3DModel, WanVideoToVideoPipeline

    root = Path(folder) / "wan"
    torch.manual_seed(seed)
    text_encoder, tokenizer = tiny_umt5(Path(folder) / "umt5-tokenizer")
    transformer = WanTransformer3DModel(**TINY_WAN_TRANSFORMER)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanVideoToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                                   vae=tiny_wan_vae(), scheduler=scheduler)  # fmt: skip
    pipe.save_pretrained(str(root))
    return root


def build_tiny_wan_vace(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny Wan VACE pipeline folder under `folder`; returns `folder/wan-vace`."""
    from diffusers import UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel

    root = Path(folder) / "wan-vace"
    torch.manual_seed(seed)
    text_encoder, tokenizer = tiny_umt5(Path(folder) / "umt5-tokenizer")
    transformer = WanVACETransformer3DModel(**TINY_WAN_TRANSFORMER, vace_layers=[0, 1], vace_in_channels=96)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                           vae=tiny_wan_vae(), scheduler=scheduler)  # fmt: skip
    pipe.save_pretrained(str(root))
    return root


@pytest.fixture(scope="session")
def tiny_wan_vace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wan_vace(tmp_path_factory.mktemp("tiny-wan-vace"))


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wan(tmp_path_factory.mktemp("tiny-wan"))
