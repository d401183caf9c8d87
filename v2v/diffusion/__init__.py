"""Diffusion restyling: Stable Diffusion img2img over a video stream, offline.

- `models`: base pipelines (diffusers folder, single file, cached hub id), ControlNets, IP-Adapter, LoRA,
  schedulers; a model that is not on disk is a one-line `ModelError` saying how to get it.
- `control`: control maps (canny, soft edges, tile, depth) or a precomputed control video.
- `attention`: cross-frame attention (anchor + previous frame keys/values, bounded bank).
- `config`: `RestyleConfig`, also read from a recipe TOML file.
- `stage`: `RestyleStage`, the pipeline stage behind `v2v restyle`.
- `testing`: tiny random models saved in the real layouts, for tests and benchmarks.

Everything here imports torch/diffusers; import the submodules you need.
"""
