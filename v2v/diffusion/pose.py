"""Pose maps for the openpose ControlNets, from a transformers ViTPose model (given by folder or cached id).

ViTPose is a top-down estimator: it finds the 17 COCO keypoints of a person inside a box. v2v gives it the
whole frame as the box, so this suits footage with one main person; for crowds, compute pose maps with a
detector-based tool and pass them as a control video. The keypoints are drawn the way the openpose
ControlNets were trained: OpenPose's 18-point body (the neck is the middle of the shoulders), each limb and
point in its OpenPose colour, on black.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# OpenPose body point i is COCO keypoint COCO_OF_OPENPOSE[i]; None = the neck (mid-shoulders)
COCO_OF_OPENPOSE = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 85), (255, 0, 170),
)  # fmt: skip


def openpose_points(keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> list[tuple[float, float] | None]:
    """COCO-17 keypoints (17, 2) (x, y) and scores (17,) -> the 18 OpenPose points (None where unsure)."""
    sure = scores >= threshold
    points: list[tuple[float, float] | None] = []
    for coco in COCO_OF_OPENPOSE:
        if coco is None:  # the neck
            points.append(tuple((keypoints[5] + keypoints[6]) / 2) if sure[5] and sure[6] else None)
        else:
            points.append(tuple(keypoints[coco]) if sure[coco] else None)
    return points


def draw_pose(points: list[tuple[float, float] | None], height: int, width: int) -> np.ndarray:
    """An OpenPose-style body map, RGB uint8 (height, width, 3): limbs at 60% of their colour, points full."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    thickness = max(1, round(max(height, width) / 128))
    for limb, (start, end) in enumerate(LIMBS):
        if points[start] is None or points[end] is None:
            continue
        a = tuple(int(round(v)) for v in points[start])  # type: ignore[union-attr]
        b = tuple(int(round(v)) for v in points[end])  # type: ignore[union-attr]
        cv2.line(canvas, a, b, tuple(int(c * 0.6) for c in COLOURS[limb]), thickness * 2, cv2.LINE_AA)
    for index, point in enumerate(points):
        if point is not None:
            centre = (int(round(point[0])), int(round(point[1])))
            cv2.circle(canvas, centre, thickness * 2, COLOURS[index], -1, cv2.LINE_AA)
    return canvas


class PoseMaps:
    """Pose maps of frames: (B, 3, H, W) float [0, 1] in, OpenPose-style maps of the same shape out."""

    def __init__(self, model: str, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 threshold: float = 0.3) -> None:
        from transformers import AutoImageProcessor, VitPoseForPoseEstimation

        from v2v.devices import resolve_device
        from v2v.diffusion.models import resolve_path
        from v2v.errors import ModelError

        path = resolve_path(model, "pose model")
        try:
            self.processor: Any = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            self.model = VitPoseForPoseEstimation.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load pose model {model!r}: "
                             f"{(str(exc) or type(exc).__name__).splitlines()[0]}") from exc
        self.device, self.dtype, self.threshold = resolve_device(device), dtype, threshold
        self.model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from v2v.frames import images_to_tensor, tensor_to_images

        height, width = images.shape[-2:]
        pictures = tensor_to_images(images)
        boxes = [[[0.0, 0.0, float(width), float(height)]] for _ in pictures]
        inputs = self.processor(images=pictures, boxes=boxes, return_tensors="pt", input_data_format="channels_last")
        outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype))
        people = self.processor.post_process_pose_estimation(outputs, boxes=boxes)
        maps = []
        for found in people:
            person = found[0]
            points = openpose_points(
                person["keypoints"].float().numpy(), person["scores"].float().numpy(), self.threshold
            )
            maps.append(draw_pose(points, height, width))
        return images_to_tensor(maps, images.device, images.dtype)
