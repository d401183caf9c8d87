"""Super-resolution: named models imported from ncnn files (Real-ESRGAN, Real-CUGAN, SPAN; declared in
`v2v/restore/families/`), any spandrel checkpoint, tiled upscaling.

- `v2v.sr.ncnn`: read ncnn `.param`/`.bin` files.
- `v2v.sr.convert`: map ncnn SRVGGNetCompact / RRDBNet / Real-CUGAN / SPAN graphs onto spandrel's state-dict layout.
- `v2v.sr.models`: name resolution (aliases, `-n NAME -s S`), the converted-weights cache, `load_model(name_or_path)`.
- `v2v.sr.upscale`: `Upscaler` (tiles chosen once per frame size, blending, dtype, scale) and `UpscaleStage`.
"""
