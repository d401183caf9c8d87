"""Restoration models with real weights: super-resolution, video super-resolution, denoising, interpolation.

Every named model is declared once, in its family's module under `v2v/restore/families/` (one file per family;
`registry.py`'s docstring says how to add one); `registry.lookup(name)` resolves a name, an alias or a near miss.
Beside the families, each module does one job and imports torch only when a model is loaded:

- networks: `basicvsr.py`, `ffdnet.py`, `rife.py` (v2v's own, filled from the released checkpoints);
  `sr_models.py` loads single-image SR models through spandrel (any checkpoint it knows, and the named ncnn
  models, converted once into a cache by `ncnn.py`, which reads the files, and `ncnn_import.py`, which maps
  the graphs onto spandrel's architectures);
- stages: `upscale.py` (`UpscaleStage`, tiled), `video_sr.py` (`VideoSRStage`), `denoise.py` (`DenoiseStage`),
  `interpolate.py` (`InterpolateStage`);
- speed-ups for the SR networks: `dense_block.py` (RRDBNet's buffers), `int8.py` (quantised on the CPU).

A loaded network's `traits` (`registry.ModelTraits`: scale, size multiple, fp16/bf16 support) are what the
stages choose the compute dtype from (`ModelTraits.dtype`).
"""
