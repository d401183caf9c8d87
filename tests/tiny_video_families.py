"""Tiny random models of the video families besides Wan (`ltx`, `animatediff`, `lucy_edit`), built from config and
saved with `save_pretrained` in the layouts real downloads have, for tests and benchmarks on machines without weights.

- `build_tiny_lucy(folder)`: `folder/lucy`, a `LucyEditPipeline` folder: tiny Wan's parts with a transformer that
  reads 32 channels (the noise's 16 and the source's 16) and a flow-matching Euler scheduler.
- `build_tiny_ltx(folder)`: `folder/ltx`, an `LTXConditionPipeline` folder: `LTXVideoTransformer3DModel` (one
  block, 2 heads of 8), `AutoencoderKLLTXVideo` with LTX's real compression (8x in time, 32x in space: 4x4 patches and
  three 2x steps; a frame rule of 8k+1 and sides of 32), a 2-layer T5 encoder with a tokenizer written offline, and
  the flow-matching Euler scheduler.
- `build_tiny_motion_adapter(folder, unet)`: `folder/motion-adapter`, a `MotionAdapter` for the tiny SD UNet of
  `tests/tiny_diffusion.py` (its widths and layers, 2 heads, 32 positions), for AnimateDiff on that SD base.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_dit import TEXT_WIDTH, tiny_t5
from tiny_video import TINY_WAN_TRANSFORMER, tiny_umt5, tiny_wan_vae


def build_tiny_lucy(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny Lucy Edit pipeline folder under `folder`; returns `folder/lucy`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LucyEditPipeline, WanTransformer3DModel

    root = Path(folder) / "lucy"
    torch.manual_seed(seed)
    text_encoder, tokenizer = tiny_umt5(Path(folder) / "umt5-tokenizer")
    transformer = WanTransformer3DModel(**{**TINY_WAN_TRANSFORMER, "in_channels": 32})  # source latents beside noise
    pipe = LucyEditPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                            vae=tiny_wan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))  # fmt: skip
    pipe.save_pretrained(str(root))
    return root



def build_tiny_motion_adapter(folder: str | Path, unet: str | Path, seed: int = 0) -> Path:
    """Write a tiny random `MotionAdapter` fitting the UNet folder `unet`; returns `folder/motion-adapter`."""
    import json

    from diffusers import MotionAdapter

    config = json.loads((Path(unet) / "config.json").read_text())
    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=tuple(config["block_out_channels"]),
                            motion_layers_per_block=config["layers_per_block"], motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=32)  # fmt: skip
    # diffusers zero-initialises the motion modules' output projections (an untrained adapter changes nothing);
    # random ones make the frames of a window depend on each other, as a trained adapter does
    for name, parameter in adapter.named_parameters():
        if "proj_out" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    root = Path(folder) / "motion-adapter"
    adapter.save_pretrained(str(root))
    return root


def build_tiny_ltx(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny LTX-Video condition pipeline folder under `folder`; returns `folder/ltx`."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )

    root = Path(folder) / "ltx"
    torch.manual_seed(seed)
    text_encoder, tokenizer = tiny_t5(Path(folder) / "t5-tokenizer")
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=1, caption_channels=TEXT_WIDTH,
    )  # fmt: skip
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=4,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )  # fmt: skip
    pipe = LTXConditionPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler())  # fmt: skip
    pipe.save_pretrained(str(root))
    return root
