"""Super-resolution: named Real-ESRGAN models imported from ncnn files, any spandrel checkpoint, tiled upscaling.

- `v2v.sr.ncnn`: read ncnn `.param`/`.bin` files.
- `v2v.sr.convert`: map ncnn SRVGGNetCompact / RRDBNet graphs onto spandrel's state-dict layout.
- `v2v.sr.models`: named models, the converted-weights cache, `load_model(name_or_path)`.
- `v2v.sr.upscale`: `Upscaler` (tiles, blending, dtype, scale) and `UpscaleStage` for pipelines.
"""
