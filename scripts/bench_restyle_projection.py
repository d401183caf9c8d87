"""PROJECTION, not a measurement (no GPU here): FLOPs per output frame of real-size diffusion models, and the
frames/s they imply at a stated fraction of a stated GPU's peak.

SD 1.5 UNet + ControlNet + VAE at 512x512 (with and without cross-frame attention and with keyframes), and FLUX.1-dev
(+ ControlNet) and SD3.5 medium at 1024x1024 with the cross-frame bank's memory, all built from their published
configs on the meta device (random, never materialised) and counted with `torch.utils.flop_counter`.

Prints one JSON line. Example:
    python scripts/bench_restyle_projection.py
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from bench_restyle_common import SD15_UNET

# A100 SXM4 dense FP16/BF16 tensor-core peak (NVIDIA datasheet); diffusion UNets reach roughly a third.
GPU_NAME = "NVIDIA A100 SXM4"
GPU_PEAK_FLOPS = 312e12
GPU_UTILISATION = 0.35

SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)

# FLUX.1-dev, InstantX's FLUX.1-dev ControlNet-Union and Stable Diffusion 3.5 medium, from their published configs
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])  # fmt: skip
FLUX_UNION_CONTROLNET = {**FLUX_DEV, "num_layers": 5, "num_single_layers": 10, "num_mode": 10}
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384, qk_norm="rms_norm",
                   dual_attention_layers=tuple(range(13)))  # fmt: skip
DIT_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=16,
               use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu")  # fmt: skip
# H100 SXM dense BF16 tensor-core peak (NVIDIA datasheet, without sparsity); large DiTs reach about 40% of it
DIT_GPU_NAME = "NVIDIA H100 SXM"
DIT_GPU_PEAK_FLOPS = 989e12
DIT_GPU_UTILISATION = 0.40
DIT_GPU_FREE_BYTES = 40 << 30  # assumed free after FLUX.1-dev (bf16, ~34 GB with T5-XXL) is loaded on 80 GB


def flops(run: Callable[[], object]) -> float:
    """FLOPs of one call of `run`, counted by torch (shapes only on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def _with_bank(model: object, family: str, run: Callable[[], object], cap: int | None = None) -> float:
    """FLOPs of `run` on a model with DiT cross-frame attention, once the bank (at most `cap` tokens a frame)
    holds an anchor and a previous frame (a third frame is counted)."""
    from v2v.diffusion.attention import FrameBank
    from v2v.diffusion.dit_attention import dit_cross_frame_attention
    from v2v.diffusion.registry import lookup

    bank = FrameBank(cap)
    with dit_cross_frame_attention(model, bank, lookup(family)):
        for _ in range(2):
            bank.begin([False])
            run()
        bank.begin([False])
        return flops(run)


def count_flops(args: argparse.Namespace) -> dict[str, object]:
    """FLOPs per output frame at 512x512 of SD 1.5 UNet + ControlNet + VAE (meta device, one forward each)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from v2v.diffusion.attention import FrameBank, cross_frame_attention

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**SD15_VAE)
    guided = 2 if args.guidance > 1 else 1
    latent = torch.empty(guided, 4, 64, 64, device="meta")
    text = torch.empty(guided, 77, 768, device="meta")
    condition = torch.empty(guided, 3, 512, 512, device="meta")

    unet_plain = flops(lambda: unet(latent, 500, text))
    bank = FrameBank()
    with cross_frame_attention(unet, bank):
        for _ in range(2):  # fill the bank with an anchor and a previous frame, then count a third frame
            bank.begin([False])
            unet(latent, 500, text)
        bank.begin([False])
        unet_cross = flops(lambda: unet(latent, 500, text))
    control = flops(lambda: controlnet(latent, 500, text, controlnet_cond=condition))
    encode = flops(lambda: vae.encode(torch.empty(1, 3, 512, 512, device="meta")))
    decode = flops(lambda: vae.decode(torch.empty(1, 4, 64, 64, device="meta")))
    steps = int(args.projection_steps * args.strength)
    per_frame_off = steps * (unet_plain + control) + encode + decode
    per_frame_on = steps * (unet_cross + control) + encode + decode
    per_frame_key = per_frame_on / args.keyframe_every

    def fps(per_frame: float) -> float:
        return round(GPU_PEAK_FLOPS * GPU_UTILISATION / per_frame, 2)

    return {
        "what": "PROJECTION: SD1.5 UNet+ControlNet+VAE from published configs, random weights on the meta device, "
        f"512x512, {steps} denoising steps ({args.projection_steps} x strength {args.strength}), CFG batch {guided}; "
        "flow estimation and fusion (CPU DIS) and the text encoder not counted",
        "tflops_unet_forward": round(unet_plain / 1e12, 4),
        "tflops_unet_forward_cross_frame": round(unet_cross / 1e12, 4),
        "tflops_controlnet_forward": round(control / 1e12, 4),
        "tflops_vae_encode": round(encode / 1e12, 4),
        "tflops_vae_decode": round(decode / 1e12, 4),
        "tflops_per_frame_temporal_off": round(per_frame_off / 1e12, 3),
        "tflops_per_frame_temporal_on": round(per_frame_on / 1e12, 3),
        f"tflops_per_frame_keyframes_every_{args.keyframe_every}": round(per_frame_key / 1e12, 3),
        "gpu": f"{GPU_NAME}, {GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense FP16 peak at {GPU_UTILISATION:.0%}",
        "projected_fps_temporal_off": fps(per_frame_off),
        "projected_fps_temporal_on": fps(per_frame_on),
        "projected_fps_keyframes": fps(per_frame_key),
    }


def count_dit_flops(args: argparse.Namespace) -> dict[str, object]:
    """PROJECTION: FLOPs per output frame at 1024x1024 of FLUX.1-dev (+ ControlNet) and SD3.5 medium, counted on
    the meta device with and without cross-frame attention; the bank's memory with the default cap."""
    from diffusers import AutoencoderKL, FluxControlNetModel, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import T5Config, T5EncoderModel

    from v2v.diffusion.attention import BANK_MEMORY_FRACTION, bank_bytes, bank_cap
    from v2v.diffusion.dit_attention import transformer_bank_shapes
    from v2v.diffusion.registry import lookup

    side, meta = 1024, torch.device("meta")
    with meta:
        flux, controlnet = FluxTransformer2DModel(**FLUX_DEV), FluxControlNetModel(**FLUX_UNION_CONTROLNET)
        sd3, vae = SD3Transformer2DModel(**SD35_MEDIUM), AutoencoderKL(**DIT_VAE)
        t5 = T5EncoderModel(T5Config(**T5_XXL))
    latent = side // 8
    tokens = (latent // 2) ** 2  # 2x2 patches (FLUX packs them, SD3 patchifies them)

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, device=meta)

    steps = int(args.dit_projection_steps * args.dit_projection_strength)
    budget = int(DIT_GPU_FREE_BYTES * BANK_MEMORY_FRACTION)
    bank, caps = {}, {}
    for name, model, family in (("flux", flux, "flux"), ("sd35_medium", sd3, "sd3")):
        shapes = transformer_bank_shapes(model, lookup(family), tokens)
        groups = 1 if family == "flux" else 2
        caps[name] = cap = bank_cap(shapes, steps, groups, 2, budget)
        bank[name] = {
            "layers": len(shapes),
            "full_gb": round(bank_bytes(shapes, steps, groups, 2, None) / 2**30, 1),
            "default_cap_tokens_per_frame": cap,
            "image_tokens_per_frame": tokens,
            "capped_gb": round(bank_bytes(shapes, steps, groups, 2, cap) / 2**30, 2),
        }
    # FLUX.1-dev: guidance-distilled (one pass a step), 512 T5 tokens; the ControlNet runs every step too
    packed, text, ids = empty(1, tokens, 64), empty(1, 512, 4096), torch.zeros(tokens, 3)
    common = dict(hidden_states=packed, encoder_hidden_states=text, pooled_projections=empty(1, 768),
                  timestep=empty(1), img_ids=ids, txt_ids=torch.zeros(512, 3), guidance=empty(1),
                  return_dict=False)  # fmt: skip

    def flux_call() -> object:
        return flux(**common)

    flux_off, flux_on = flops(flux_call), _with_bank(flux, "flux", flux_call, caps["flux"])
    flux_full = _with_bank(flux, "flux", flux_call)
    control = flops(lambda: controlnet(**common, controlnet_cond=packed, controlnet_mode=torch.zeros(1, 1,
                                        dtype=torch.long, device=meta)))  # fmt: skip
    encode = flops(lambda: vae.encode(empty(1, 3, side, side)))
    decode = flops(lambda: vae.decode(empty(1, 16, latent, latent)))
    t5_512 = flops(lambda: t5(input_ids=torch.zeros(1, 512, dtype=torch.long, device=meta)))
    # SD3.5 medium: classifier-free guidance (batch 2), 333 text tokens (77 CLIP + 256 T5), prompt and negative
    sd3_inputs = dict(hidden_states=empty(2, 16, latent, latent), encoder_hidden_states=empty(2, 333, 4096),
                      pooled_projections=empty(2, 2048), timestep=empty(2), return_dict=False)  # fmt: skip

    def sd3_call() -> object:
        return sd3(**sd3_inputs)

    sd3_off, sd3_on = flops(sd3_call), _with_bank(sd3, "sd3", sd3_call, caps["sd35_medium"])
    sd3_full = _with_bank(sd3, "sd3", sd3_call)
    t5_256 = flops(lambda: t5(input_ids=torch.zeros(2, 256, dtype=torch.long, device=meta)))
    frame = encode + decode
    per_frame = {
        "flux_controlnet_temporal_off": steps * (flux_off + control) + frame + t5_512,
        "flux_controlnet_temporal_on": steps * (flux_on + control) + frame + t5_512,
        "sd35_medium_temporal_off": steps * sd3_off + frame + t5_256,
        "sd35_medium_temporal_on": steps * sd3_on + frame + t5_256,
    }
    fps = DIT_GPU_PEAK_FLOPS * DIT_GPU_UTILISATION
    return {
        "what": f"PROJECTION: FLUX.1-dev + InstantX ControlNet-Union and SD3.5 medium from their published configs, "
        f"random weights on the meta device, {side}x{side}, {steps} denoising steps ({args.dit_projection_steps} x "
        f"strength {args.dit_projection_strength}); per frame: transformer (+ ControlNet) per step, VAE encode and "
        "decode, T5-XXL once (the pipelines encode the prompt every call); CLIP, flow and fusion not counted",
        "tflops_flux_forward": round(flux_off / 1e12, 2),
        "tflops_flux_forward_cross_frame_default_cap": round(flux_on / 1e12, 2),
        "tflops_flux_forward_cross_frame_uncapped": round(flux_full / 1e12, 2),
        "tflops_flux_controlnet_forward": round(control / 1e12, 2),
        "tflops_sd35_medium_forward_cfg": round(sd3_off / 1e12, 2),
        "tflops_sd35_medium_forward_cfg_cross_frame_default_cap": round(sd3_on / 1e12, 2),
        "tflops_sd35_medium_forward_cfg_cross_frame_uncapped": round(sd3_full / 1e12, 2),
        "tflops_vae_encode_decode": round(frame / 1e12, 2),
        "tflops_t5_xxl_512_tokens": round(t5_512 / 1e12, 2),
        **{f"tflops_per_frame_{name}": round(value / 1e12, 1) for name, value in per_frame.items()},
        "gpu": f"{DIT_GPU_NAME}, {DIT_GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense BF16 peak at {DIT_GPU_UTILISATION:.0%}",
        **{f"projected_fps_{name}": round(fps / value, 3) for name, value in per_frame.items()},
        "bank_budget": f"{BANK_MEMORY_FRACTION:.0%} of an assumed {DIT_GPU_FREE_BYTES / 2**30:.0f} GB free = "
        f"{budget / 2**30:.0f} GB, bf16, anchor + previous frame",
        "bank": bank,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, default=0.5, help="img2img strength assumed for SD 1.5")
    parser.add_argument("--guidance", type=float, default=7.5, help="above 1: classifier-free guidance (batch 2)")
    parser.add_argument("--keyframe-every", type=int, default=4)
    parser.add_argument("--projection-steps", type=int, default=20, help="steps assumed by the SD 1.5 projection")
    parser.add_argument("--dit-projection-steps", type=int, default=28, help="steps assumed by the DiT projection")
    parser.add_argument("--dit-projection-strength", type=float, default=0.6, help="img2img strength assumed there")
    args = parser.parse_args()
    print(json.dumps({"bench": "restyle", "projection": count_flops(args), "projection_dit": count_dit_flops(args)}))

if __name__ == "__main__":
    main()
