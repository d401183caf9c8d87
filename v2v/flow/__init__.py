"""Optical flow for v2v: estimators (OpenCV DIS, RAFT), backward warping, occlusion masks, visualisation.

    from v2v.flow import estimate_flow, make_flow_estimator, flow_to_tensor, warp_by_flow, invalid_mask

    dis = make_flow_estimator("dis")                      # or "raft" / "raft-small"
    forward, backward = dis.pair(a, b)                    # RGB uint8 (H, W, 3) -> float32 (H, W, 2) each
    warped_b = warp_by_flow(images_to_tensor([b]), flow_to_tensor(forward))   # b pulled onto a's grid
    untrusted = invalid_mask(flow_to_tensor(forward), flow_to_tensor(backward))  # bool (1, 1, H, W)
"""

from v2v.flow.estimators import DIS_PRESETS, DISFlow, FlowEstimator
from v2v.flow.factory import FLOW_METHODS, estimate_flow, make_flow_estimator
from v2v.flow.occlusion import invalid_mask, motion_boundary_mask, occlusion_mask, outside_mask
from v2v.flow.warp import FlowWarp, flow_to_tensor, warp_by_flow

__all__ = [
    "DIS_PRESETS",
    "FLOW_METHODS",
    "DISFlow",
    "FlowEstimator",
    "FlowWarp",
    "estimate_flow",
    "flow_to_tensor",
    "invalid_mask",
    "make_flow_estimator",
    "motion_boundary_mask",
    "occlusion_mask",
    "outside_mask",
    "warp_by_flow",
]
