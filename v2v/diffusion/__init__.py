"""Diffusion editing over a video stream: any registered image family becomes a video editor.

- `registry`: the `Family` interface and the registry; `families/` holds one module per family (SD 1.x/2.x,
  SDXL, InstructPix2Pix, FLUX.1, FLUX.1 Kontext, SD3/3.5, Qwen-Image-Edit): how its models are recognised and
  loaded, which diffusers pipeline it calls per edit kind, which ControlNets/IP-Adapters it takes, where
  cross-frame attention goes, and its defaults.
- `models`: the loading helpers every family's loading is built from (where a model is: a diffusers folder, a single
  file or a hub id, `resolve_path`; LoRA, schedulers, the IP-Adapter's files); a model that is neither on disk nor
  downloadable (offline) is a one-line `ModelError` saying how to get it. `hub`: the cache lookup and the download.
  `checkpoints`: a checkpoint's tensor names and shapes, without its weights.
- `control`, `pose`: control maps (canny, soft edges, tile, depth, pose) or a precomputed control video.
- `attention`: cross-frame attention (anchor + previous frame keys/values, a bank bounded by a memory budget).
- `dit_attention`: the same for diffusion transformers' joint attention (FLUX, SD3, Qwen-Image): image queries also
  see the bank's image keys, taken after the family's rotary embedding; text tokens are never banked. Each DiT
  family names its processor class and the layers that get it.
- `keyframes`: keyframe mode, the look of keyframes carried between them by flow.
- `latent_fusion`: latent flow fusion, the previous frame's latents warped by the source's flow during the first
  denoising steps.
- `relight`, `ic_light`, `estimate_fusion`: IC-Light relighting (`RelightStage`, a `DiffusionStage` whose SD 1.5 UNet
  IC-Light's offsets widen to read the foreground's and background's latents) and Light-A-Video's fusion of each
  step's clean-image estimate along the source's flow.
- `instantid`, `faces`: InstantID on SDXL (IdentityNet on each frame's face keypoints, the face adapter fed an ArcFace
  embedding), faces found by MediaPipe's BlazeFace through ai-edge-litert.
- `config`: `RestyleConfig` and `EditConfig`, also read from a recipe TOML file.
- `stage`: `RestyleStage` (`v2v restyle`) and `EditStage` (`v2v edit`), one `DiffusionStage` asking the family.

Tiny random models for tests and benchmarks are built by `tests/tiny_diffusion.py` and `tests/tiny_dit.py` (not
part of the package).

Everything here but `registry` and `families` imports torch/diffusers; import the submodules you need:

    from v2v.diffusion.config import EditConfig, RestyleConfig
    from v2v.diffusion.stage import EditStage, RestyleStage
    from v2v.pipeline import run

    config = RestyleConfig(model="stable-diffusion-v1-5/stable-diffusion-v1-5", prompt="a watercolour painting",
                           controlnets=["lllyasviel/control_v11p_sd15_canny"], strength=0.55, keyframe_every=4)
    run("in.mp4", [RestyleStage(config)], "out.mp4")     # or RestyleConfig.from_toml("recipe.toml")
    run("in.mp4", [EditStage(EditConfig(model="timbrooks/instruct-pix2pix", instruction="make it winter"))],
        "winter.mp4")
"""
