"""v2v: video-to-video editing in a frame-streaming pipeline.

The public API is imported lazily so that `v2v --version` stays instant (no PyAV, no torch): each name below
loads its module on first use. `v2v.open` (the same as `v2v.open_source`) is there too, but left out of
`__all__` so that `from v2v import *` does not hide the builtin `open`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # frames, stages and the runners (one pass, or in resumable segments)
    "Frame": "v2v.frames",
    "Stage": "v2v.pipeline",
    "Context": "v2v.pipeline",
    "Timing": "v2v.pipeline",
    "MapStage": "v2v.pipeline",
    "run": "v2v.pipeline",
    "RunReport": "v2v.pipeline",
    "run_segmented": "v2v.segments",
    # reading and writing
    "open_source": "v2v.io.reader",
    "probe": "v2v.io.probe",
    "VideoInfo": "v2v.io.container",
    "open_writer": "v2v.io.writer",
    "Encoding": "v2v.io.writer",
    # the processing stages (each imports torch and its models only when used)
    "UpscaleStage": "v2v.restore.upscale",
    "VideoSRStage": "v2v.restore.video_sr",
    "StabilizeStage": "v2v.consistency.stage",
    "StylizeStage": "v2v.stylize.stage",
    "StylizeConfig": "v2v.stylize.stage",
    "TranslateStage": "v2v.stylize.stage",
    "FrameOptions": "v2v.stylize.stage",
    "FusionConfig": "v2v.consistency.fusion",
    "InterpolateStage": "v2v.restore.interpolate",
    "Interpolator": "v2v.restore.rife",
    "DenoiseStage": "v2v.restore.denoise",
    "RestyleStage": "v2v.diffusion.stage",
    "EditStage": "v2v.diffusion.stage",
    "VideoModelStage": "v2v.diffusion.video_stage",
    "InpaintStage": "v2v.inpaint.stage",
    "InpaintConfig": "v2v.inpaint.stage",
    "RelightStage": "v2v.diffusion.relight",
    "RelightConfig": "v2v.diffusion.config",
    "PropagatedMask": "v2v.inpaint.propagate",
    "AutoMask": "v2v.inpaint.auto",  # automatic masks and SAM 2 tracking (issue 26); open_mask reads --mask's forms
    "TrackedMask": "v2v.inpaint.track",
    "TrackPrompt": "v2v.inpaint.track",
    "open_mask": "v2v.inpaint.spec",
    "RestyleConfig": "v2v.diffusion.config",
    "EditConfig": "v2v.diffusion.config",
    # errors
    "V2VError": "v2v.errors",
    "UsageError": "v2v.errors",
    "ParameterError": "v2v.errors",
    "InputError": "v2v.errors",
    "SourceNotFoundError": "v2v.errors",
    "OutputExistsError": "v2v.errors",
    "OutputError": "v2v.errors",
    "ModelError": "v2v.errors",
    "MissingDependencyError": "v2v.errors",
}
# attributes that are not exported by `import *`: name -> (module, attribute)
_HIDDEN = {"open": ("v2v.io.reader", "open_source")}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _HIDDEN:
        module, attribute = _HIDDEN[name]
    elif name in _EXPORTS:
        module, attribute = _EXPORTS[name], name
    else:
        raise AttributeError(f"module 'v2v' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_HIDDEN})
