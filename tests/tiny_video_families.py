"""Tiny random models of the video families besides Wan (`ltx`, `animatediff`, `lucy_edit`), built from config and
saved with `save_pretrained` in the layouts real downloads have, for tests and benchmarks on machines without weights.

- `build_tiny_lucy(folder)`: `folder/lucy`, a `LucyEditPipeline` folder: tiny Wan's parts with a transformer that
  reads 32 channels (the noise's 16 and the source's 16) and a flow-matching Euler scheduler.
- `build_tiny_motion_adapter(folder, unet)`: `folder/motion-adapter`, a `MotionAdapter` for the tiny SD UNet of
  `tests/tiny_diffusion.py` (its widths and layers, 2 heads, 32 positions), for AnimateDiff on that SD base.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_dit import TEXT_WIDTH
from tiny_video import tiny_umt5, tiny_wan_vae


def build_tiny_lucy(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny Lucy Edit pipeline folder under `folder`; returns `folder/lucy`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LucyEditPipeline, WanTransformer3DModel

    root = Path(folder) / "lucy"
    torch.manual_seed(seed)
    text_encoder, tokenizer = tiny_umt5(Path(folder) / "umt5-tokenizer")
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=32, out_channels=16,
        text_dim=TEXT_WIDTH, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )  # fmt: skip
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
