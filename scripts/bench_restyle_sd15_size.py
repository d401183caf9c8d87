"""Benchmark `v2v restyle` at real size on the CPU: SD 1.5-sized random models, one 512x512 frame.

SD 1.5-sized random models (from the published configs) restyle one 512x512 frame with temporal off and on, each
its own `python -m v2v restyle` process: seconds per frame and peak RSS.

Prints one JSON line. Example:
    python scripts/bench_restyle_sd15_size.py --steps 10 --strength 0.5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_restyle_common import SD15_UNET, make_parser, read_frames, run_case


def build_sd15_sized(folder: Path) -> Path:
    """Random SD 1.5-sized models (UNet 860M, VAE 84M, CLIP text 123M parameters, from the published configs),
    saved with save_pretrained in fp16 to keep the disk small; the tokenizer is the tests' few-entry one."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tiny_diffusion import write_tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = write_tiny_tokenizer(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, vocab_size=vocab_size, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=512)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=UNet2DConditionModel(
        **SD15_UNET), scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), variant=None)
    return folder


def case_sd15_size(scratch: Path, clip: Path, args: argparse.Namespace) -> dict[str, object]:
    """One 512x512 frame (after a first one, so temporal on has an anchor) through `python -m v2v restyle` with
    SD 1.5-sized random models, temporal off and on: wall time and the child's peak RSS. Each run is its own
    process; 1 and 2 frames are timed so that loading cancels out of the per-frame figure. The models and
    the clip are written in `scratch`."""
    import cv2

    from v2v.io.writer import Encoding, open_writer

    folder = build_sd15_sized(scratch / "sd15-sized")
    square = scratch / "square.mkv"
    with open_writer(square, encoding=Encoding(codec="ffv1"), overwrite=True) as writer:
        for frame in read_frames(clip, 2):
            writer.write(frame.with_image(cv2.resize(frame.image[:, 64:336], (512, 512))))
    figures: dict[str, object] = {"model": "random SD 1.5-sized UNet + VAE + CLIP text, fp32, 512x512",
                                  "steps": args.steps, "strength": args.strength}
    for temporal in ("off", "on"):
        runs = {}
        for count in (1, 2):
            command = [sys.executable, "-m", "v2v", "restyle", str(square), "-o", str(scratch / "o.mkv"),
                       "--model", str(folder), "--prompt", args.prompt, "--steps", str(args.steps), "--strength",
                       str(args.strength), "--temporal", temporal, "--max-frames", str(count), "--codec", "ffv1",
                       "--overwrite", "--no-progress"]
            began = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"failed: {' '.join(command)}\n{process.stderr.read().decode() if process.stderr else ''}")
            runs[count] = (time.perf_counter() - began, usage.ru_maxrss / 1024)
        figures[f"temporal_{temporal}"] = {
            "seconds_per_frame": round(runs[2][0] - runs[1][0], 1),
            "seconds_1_frame_with_loading": round(runs[1][0], 1),
            "peak_rss_mib_2_frames": round(runs[2][1]),
        }
    return figures


def main() -> None:
    args = make_parser(__doc__).parse_args()
    run_case(args, case_sd15_size, "sd15_size", sd_models=False)

if __name__ == "__main__":
    main()
