"""Temporal consistency: make per-frame edits stable over time, guided by the source video's motion.

API for other stages (e.g. diffusion restyle); frames are RGB uint8 (H, W, 3) numpy arrays:

    from v2v.consistency import FusionConfig, TemporalFuser
    from v2v.flow import make_flow_estimator

    fuser = TemporalFuser(FusionConfig(fusion=0.85), make_flow_estimator("dis"), device="cuda")
    for edited, source in frames:              # the edit of frame t and the source frame it came from
        stable = fuser.fuse(edited, source)    # the fused frame t, at once

    # offline, with a bounded lookahead window (better colour at the start of each shot):
    fuser = TemporalFuser(FusionConfig(lookahead=8))
    for edited, source in frames:
        for stable in fuser.push(edited, source):   # [] while the window fills, then one frame per call
            ...
    for stable in fuser.flush():
        ...

- `TemporalFuser`: flow-guided fusion with the warped previous output where visible, a low-band moving
  average that tends to the edit's consistent look (not frame 0's), scene-cut restarts (`fuser.cuts`),
  bounded lookahead; `on_step` receives each frame's flows and trust map.
- `masked_lowpass(values, weight, scale)`: normalised-convolution low-pass of (B, C, H, W) tensors that
  fills holes.
- `StabilizeStage(guide, config, estimator)`: the pipeline stage behind `v2v stabilize` (reads the guide
  in step with the processed frames); `check_same_shape` compares two readers.
- Flow pieces live in `v2v.flow`: `make_flow_estimator`, `warp_by_flow`, `occlusion_mask`,
  `motion_boundary_mask`, `invalid_mask`, `outside_mask`.
"""

from v2v.consistency.fusion import FusionConfig, FusionStep, TemporalFuser, masked_lowpass
from v2v.consistency.stage import StabilizeStage, check_same_shape

__all__ = ["FusionConfig", "FusionStep", "StabilizeStage", "TemporalFuser", "check_same_shape", "masked_lowpass"]
