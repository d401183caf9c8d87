"""Which pixels a flow can be trusted on: the forward-backward check and motion boundaries of
Lai et al. 2018 ("Learning Blind Video Temporal Consistency"), after Sundaram et al. 2010 / Ruder et al. 2016.

For a pixel x of image A with flow w(x) (A -> B) and the reverse flow ŵ (B -> A) sampled where x lands,
ŵ' = ŵ(x + w(x)):

- occluded when |w + ŵ'|² > 0.01 (|w|² + |ŵ'|²) + 0.5 (the two flows do not cancel);
- a motion boundary when |∇u|² + |∇v|² > 0.01 |w|² + 0.002 (the flow changes sharply there; forward
  differences, as in Lai et al.'s evaluation code).

All masks are bool (B, 1, H, W) on A's pixel grid; flows are float (B, 2, H, W) in pixels, torch tensors
or numpy arrays (the masks then are numpy too: see `v2v.flow.warp` for why the CPU path uses numpy).
"""

from __future__ import annotations

from v2v.flow.warp import Array, pixel_grid, warp_by_flow


def _length_sq(flow: Array) -> Array:
    return (flow * flow).sum(axis=1, keepdims=True)


def occlusion_mask(flow: Array, flow_back: Array) -> Array:
    """True where a pixel of A fails the forward-backward check (occluded or mismatched in B).

    Args:
        flow: float (B, 2, H, W), A -> B.
        flow_back: float (B, 2, H, W), B -> A.

    Returns:
        bool (B, 1, H, W) on A's grid.
    """
    back = warp_by_flow(flow_back, flow)
    mismatch = _length_sq(flow + back)
    return mismatch > 0.01 * (_length_sq(flow) + _length_sq(back)) + 0.5


def motion_boundary_mask(flow: Array) -> Array:
    """True on motion boundaries of `flow`: |∇u|² + |∇v|² > 0.01 |w|² + 0.002.

    Args:
        flow: float (B, 2, H, W) in pixels.

    Returns:
        bool (B, 1, H, W).
    """
    dx = flow * 0
    dy = flow * 0
    dx[..., :, :-1] = flow[..., :, 1:] - flow[..., :, :-1]
    dy[..., :-1, :] = flow[..., 1:, :] - flow[..., :-1, :]
    return _length_sq(dx) + _length_sq(dy) > 0.01 * _length_sq(flow) + 0.002


def outside_mask(flow: Array, margin: float = 0.0) -> Array:
    """True where x + flow(x) leaves the image (by more than `margin` pixels): content entering the frame,
    which the forward-backward test cannot see because the warped flow is padded from the border.

    Args:
        flow: float (B, 2, H, W) in pixels.

    Returns:
        bool (B, 1, H, W).
    """
    height, width = flow.shape[-2:]
    grid = pixel_grid(flow)
    xs = grid[:, :1] + flow[:, :1]
    ys = grid[:, 1:] + flow[:, 1:]
    return (xs < -margin) | (xs > width - 1 + margin) | (ys < -margin) | (ys > height - 1 + margin)


def invalid_mask(flow: Array, flow_back: Array) -> Array:
    """Occluded or on a motion boundary (Lai et al. 2018's mask): bool (B, 1, H, W), True = don't trust."""
    return occlusion_mask(flow, flow_back) | motion_boundary_mask(flow)
