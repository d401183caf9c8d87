"""Temporal consistency: make per-frame edits stable over time, guided by the source video's motion.

API for other stages (e.g. diffusion restyle), all on RGB uint8 (H, W, 3) numpy frames:

    from v2v.consistency import TemporalFuser, FusionConfig
    fuser = TemporalFuser(FusionConfig(strength=0.85), estimator=None, device="cuda")
    for edited, source in frames:          # the edit of frame t and the source frame it came from
        stable = fuser.fuse(edited, source)   # fused frame t (or push()/flush() with lookahead)

- `TemporalFuser`: flow-guided fusion with the warped previous output where visible, a low-band moving
  average that tends to the edit's consistent look, scene-cut restarts, bounded lookahead.
- `masked_lowpass(values, weight, scale)`: normalised-convolution low-pass (fills holes).
- `StabilizeStage(guide, ...)`: the pipeline stage behind `v2v stabilize` (zips the guide's frames in).
- Flow pieces live in `v2v.flow`: `make_flow_estimator`, `warp_by_flow`, `occlusion_mask`, `invalid_mask`.
"""

from v2v.consistency.fusion import FusionConfig, FusionStep, TemporalFuser, masked_lowpass
from v2v.consistency.stage import StabilizeStage, check_same_shape

__all__ = ["FusionConfig", "FusionStep", "StabilizeStage", "TemporalFuser", "check_same_shape", "masked_lowpass"]
