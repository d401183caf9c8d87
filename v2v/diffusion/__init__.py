"""Diffusion restyling: Stable Diffusion img2img over a video stream, offline.

- `models`: base pipelines (diffusers folder, single file, cached hub id), ControlNets, IP-Adapter, LoRA,
  schedulers; a model that is not on disk is a one-line `ModelError` saying how to get it.
- `control`, `pose`: control maps (canny, soft edges, tile, depth, pose) or a precomputed control video.
- `attention`: cross-frame attention (anchor + previous frame keys/values, bounded bank).
- `keyframes`: keyframe mode, the look of keyframes carried between them by flow.
- `config`: `RestyleConfig`, also read from a recipe TOML file.
- `stage`: `RestyleStage`, the pipeline stage behind `v2v restyle`.
- `testing`: tiny random models saved in the real layouts, for tests and benchmarks.

Everything here imports torch/diffusers; import the submodules you need:

    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage
    from v2v.pipeline import run

    config = RestyleConfig(model="stable-diffusion-v1-5/stable-diffusion-v1-5", prompt="a watercolour painting",
                           controlnets=["lllyasviel/control_v11p_sd15_canny"], strength=0.55, keyframe_every=4)
    run("in.mp4", [RestyleStage(config)], "out.mp4")     # or RestyleConfig.from_toml("recipe.toml")
"""
