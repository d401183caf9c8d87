"""Pose maps from BlazePose (MediaPipe's full-body pose, 33 landmarks), run with LiteRT on the CPU.

The `mediapipe==0.10.21` wheel ships the two networks (Apache-2.0); its own code pins numpy < 2, so v2v never
imports it and reads only the files, run by `ai-edge-litert`:

- `modules/pose_detection/pose_detection.tflite`: an SSD detector on a 224x224 letterboxed frame in [-1, 1]; 2254
  anchors, each a box and four alignment points (the hips' centre, a point whose distance from it is the body's
  radius, and two for the upper body);
- `modules/pose_landmark/pose_landmark_full.tflite`: 39 landmarks (the 33 body points, then alignment points) in a
  256x256 crop in [0, 1] of a square region of interest rotated so the body stands upright, a presence score, and
  a 64x64 heatmap per landmark.

What MediaPipe's pose graph does, in numpy (`BlazePose.track`): the detector runs only when no person is tracked;
its best detection (weighted non-maximum suppression, IoU 0.3) gives the region of interest: centred on the hips,
twice the radius times 1.25 on a side, rotated so the hips-to-radius vector points up. The landmark network runs in
that region, and the next frame's region comes from this frame's landmarks 33 and 34 (the same alignment points)
while the presence score stays at 0.5 or more; otherwise the detector runs again, on the same frame. The landmarks
are refined from the heatmap as MediaPipe's graph does (`refine_from_heatmap`).

`BlazePoseMaps` draws the 33 landmarks as OpenPose's 18-point body (through the COCO-17 points `pose.py` draws,
`COCO_OF_BLAZEPOSE`), after a One Euro filter per coordinate (Casiez et al. 2012) in units of the person's size,
restarted at scene cuts and whenever the person is lost. One person a frame (the most confident); a frame with no
person gets an empty (black) map, and the number of such frames is logged when a pass ends.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from v2v.weights import MEDIAPIPE_INSTALL

log = logging.getLogger(__name__)

MEDIAPIPE_MODULE = "mediapipe"
DETECTOR_FILE = "modules/pose_detection/pose_detection.tflite"
LANDMARK_FILE = "modules/pose_landmark/pose_landmark_full.tflite"

DETECTOR_SIZE, LANDMARK_SIZE = 224, 256
DETECTION_SCORE = 0.5  # MediaPipe's min_score_thresh
NMS_IOU = 0.3
PRESENCE = 0.5  # MediaPipe's min_tracking_confidence: below it the person is lost
ROI_SCALE = 1.25  # the margin MediaPipe's graph adds around the alignment circle
VISIBLE = 0.5  # a landmark is drawn when its visibility is at least this

# COCO-17 keypoint i is BlazePose landmark COCO_OF_BLAZEPOSE[i] (nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles), so pose.py's OpenPose drawing takes them as ViTPose's
COCO_OF_BLAZEPOSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def weight_paths() -> tuple[Path, Path]:
    """The detector's and the landmark network's files in the installed mediapipe wheel; a one-line error naming
    the pip command when they are not there."""
    from v2v.weights import package_file

    return tuple(package_file(MEDIAPIPE_MODULE, file, MEDIAPIPE_INSTALL, "pose (BlazePose)")  # type: ignore[return-value]
                 for file in (DETECTOR_FILE, LANDMARK_FILE))


def blazepose_available() -> bool:
    from v2v.weights import has_package_file

    return all(has_package_file(MEDIAPIPE_MODULE, file) for file in (DETECTOR_FILE, LANDMARK_FILE))


def ssd_anchors() -> np.ndarray:
    """(2254, 2) anchor centres (x, y) in [0, 1] of the detector's input: MediaPipe's SsdAnchorsCalculator with
    5 layers, strides 8, 16, 32, 32, 32, fixed anchor size, two anchors a cell per layer (layers of one stride share
    a grid, so the 32-stride grid has six a cell)."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 2), (32, 6)):
        cells = math.ceil(DETECTOR_SIZE / stride)
        y, x = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(x + 0.5) / cells, (y + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Region:
    """A square region of the frame: centre (x, y) and side in pixels, rotated by `rotation` radians (clockwise on
    screen, as MediaPipe's NormalizedRect)."""

    x: float
    y: float
    side: float
    rotation: float

    @staticmethod
    def aligned(centre: np.ndarray, scale: np.ndarray) -> Region:
        """MediaPipe's AlignmentPointsRectsCalculator then RectTransformation: centred on `centre`, 2 x the distance
        to `scale` x ROI_SCALE on a side, rotated so the vector centre -> scale points up."""
        dx, dy = float(scale[0] - centre[0]), float(scale[1] - centre[1])
        rotation = math.pi / 2 - math.atan2(-dy, dx)
        rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
        return Region(float(centre[0]), float(centre[1]), 2 * math.hypot(dx, dy) * ROI_SCALE, rotation)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points in [0, 1] of the region (before rotation) -> (N, 2) frame pixels."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        local = (points - 0.5) * self.side
        return np.stack([self.x + cos * local[:, 0] - sin * local[:, 1],
                         self.y + sin * local[:, 0] + cos * local[:, 1]], axis=-1)

    def crop(self, image: np.ndarray, size: int, border: int) -> np.ndarray:
        """The region as a (size, size, 3) float32 picture in [0, 1] (cv2 bilinear; `border` a cv2 border mode)."""
        import cv2

        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        step = self.side / size  # frame pixels per crop pixel; centres at +0.5 on both sides
        origin = self.to_frame(np.array([[0.5 / size, 0.5 / size]]))[0] - 0.5
        matrix = np.array([[cos * step, -sin * step, origin[0]], [sin * step, cos * step, origin[1]]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        crop = cv2.warpAffine(image, matrix, (size, size), flags=flags, borderMode=border, borderValue=(0, 0, 0))
        return crop.astype(np.float32) / 255.0


@dataclass
class Person:
    """One person's landmarks in frame pixels: `points` (33, 2), `visibility` (33,) in [0, 1], `presence`, and the
    region to look in next frame."""

    points: np.ndarray
    visibility: np.ndarray
    presence: float
    next_region: Region


class BlazePose:
    """BlazePose's detector and landmark network (LiteRT), tracking one person from frame to frame."""

    def __init__(self, threads: int | None = None) -> None:
        from v2v.errors import require

        require("ai_edge_litert", "masks")
        from ai_edge_litert.interpreter import Interpreter

        detector, landmarks = weight_paths()
        threads = threads or max(1, min(4, torch.get_num_threads()))
        self.detector, self.landmarks = (Interpreter(model_path=str(path), num_threads=threads)
                                         for path in (detector, landmarks))
        for network in (self.detector, self.landmarks):
            network.allocate_tensors()
        self.anchors = ssd_anchors()
        self.region: Region | None = None  # where to look in the next frame: None = run the detector

    def reset(self) -> None:
        self.region = None

    @staticmethod
    def _run(network: Any, picture: np.ndarray) -> dict[str, np.ndarray]:
        network.set_tensor(network.get_input_details()[0]["index"], picture[None])
        network.invoke()
        return {out["name"]: network.get_tensor(out["index"])[0] for out in network.get_output_details()}

    def detect(self, image: np.ndarray) -> Region | None:
        """The region of interest of the most confident person in an RGB uint8 frame, or None."""
        import cv2

        height, width = image.shape[:2]
        whole = Region(width / 2, height / 2, float(max(width, height)), 0.0)  # letterboxed, zero border
        picture = whole.crop(image, DETECTOR_SIZE, cv2.BORDER_CONSTANT) * 2.0 - 1.0
        out = self._run(self.detector, picture)
        raw = out["Identity"].reshape(-1, 12) / DETECTOR_SIZE
        scores = 1.0 / (1.0 + np.exp(-np.clip(out["Identity_1"].reshape(-1).astype(np.float64), -100, 100)))
        keep = scores >= DETECTION_SCORE
        if not keep.any():
            return None
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        centres = raw[:, 0:2] + anchors
        boxes = np.concatenate([centres - raw[:, 2:4] / 2, centres + raw[:, 2:4] / 2], axis=1)
        points = raw[:, 4:12].reshape(-1, 4, 2) + anchors[:, None]
        best = int(np.argmax(scores))
        overlap = box_iou(boxes[best], boxes) > NMS_IOU  # MediaPipe's weighted NMS, its best cluster only
        weights = scores[overlap] / scores[overlap].sum()
        alignment = whole.to_frame(np.tensordot(weights, points[overlap], axes=1)[:2])  # hips' centre, radius point
        return Region.aligned(alignment[0], alignment[1])

    def landmarks_in(self, image: np.ndarray, region: Region) -> Person:
        """The landmark network on `region` of an RGB uint8 frame."""
        import cv2

        out = self._run(self.landmarks, region.crop(image, LANDMARK_SIZE, cv2.BORDER_REPLICATE))
        raw = out["Identity"].reshape(39, 5)
        points = region.to_frame(refine_from_heatmap(raw[:, :2] / LANDMARK_SIZE, out["Identity_3"]))
        visibility = 1.0 / (1.0 + np.exp(-raw[:33, 3]))
        presence = float(out["Identity_1"].reshape(-1)[0])  # the network gives it as a probability already
        return Person(points[:33], visibility, presence, Region.aligned(points[33], points[34]))

    def track(self, image: np.ndarray) -> Person | None:
        """The person in this frame (RGB uint8 (H, W, 3)), following the one of the previous frame; None if none."""
        for detecting in ((False, True) if self.region is not None else (True,)):
            region = self.detect(image) if detecting else self.region
            if region is None:
                break
            person = self.landmarks_in(image, region)
            if person.presence >= PRESENCE:
                self.region = person.next_region
                return person
        self.region = None
        return None


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray, kernel: int = 7, confident: float = 0.5) -> np.ndarray:
    """MediaPipe's RefineLandmarksFromHeatmapCalculator: each landmark (N, 2) in [0, 1] of the crop moves to the
    confidence-weighted mean position (sigmoid of the heatmap (h, w, N), in a `kernel`-wide window around it, cut at
    the heatmap's edges) where the window's most confident cell reaches `confident`; landmarks off the heatmap stay."""
    height, width = heatmap.shape[:2]
    refined = points.copy()
    reach = (kernel - 1) // 2
    for index, (x, y) in enumerate(points):
        column, row = int(x * width), int(y * height)
        if not (0 <= column < width and 0 <= row < height):
            continue
        rows, columns = slice(max(0, row - reach), row + reach + 1), slice(max(0, column - reach), column + reach + 1)
        confidence = 1.0 / (1.0 + np.exp(-heatmap[rows, columns, index].astype(np.float64)))
        total = confidence.sum()
        if confidence.max() >= confident and total > 0:
            grid_rows, grid_columns = np.mgrid[rows.start : rows.start + confidence.shape[0],
                                               columns.start : columns.start + confidence.shape[1]]
            refined[index] = ((grid_columns * confidence).sum() / total / width,  # MediaPipe's: no half-cell shift
                              (grid_rows * confidence).sum() / total / height)
    return refined


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with (N, 4) boxes."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area - inter, 1e-12)


class OneEuro:
    """The One Euro filter (Casiez, Roussel, Vogel 2012) on arrays, one sample a frame: a low-pass whose cutoff
    rises with speed, so slow jitter is smoothed and fast moves are not delayed. Cutoffs are in cycles a frame."""

    def __init__(self, min_cutoff: float = 0.1, beta: float = 10.0, derivative_cutoff: float = 0.2) -> None:
        self.min_cutoff, self.beta, self.derivative_cutoff = min_cutoff, beta, derivative_cutoff
        self.reset()

    def reset(self) -> None:
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff))

    def __call__(self, value: np.ndarray) -> np.ndarray:
        if self.value is None or self.speed is None:
            self.value, self.speed = value.copy(), np.zeros_like(value)
            return value
        speed = value - self.value
        self.speed = self.speed + self._alpha(self.derivative_cutoff) * (speed - self.speed)
        alpha = self._alpha(self.min_cutoff + self.beta * np.abs(self.speed))
        self.value = self.value + alpha * (value - self.value)
        return self.value


class BlazePoseMaps:
    """`pose` without a ViTPose model: (B, 3, H, W) float [0, 1] frames in clip order, across calls -> OpenPose-style
    body maps of the same shape (module docstring). `keypoints` holds the last frame's smoothed COCO-17 keypoints
    and visibility (None: no person), for tests and tools."""

    reaches_back = True  # a frame's keypoints depend on the earlier frames of its shot (tracking, smoothing)

    def __init__(self, smooth: bool = True, threads: int | None = None) -> None:
        self.pose = BlazePose(threads)
        self.smooth = smooth
        self.filter = OneEuro()
        self.keypoints: tuple[np.ndarray, np.ndarray] | None = None
        self.close()

    def close(self) -> None:
        """A pass ends: say how many frames had no person, and forget the person and the shot."""
        if getattr(self, "frames", 0) and self.empty:
            log.warning("pose: no person found in %d of %d frames (their maps are empty)", self.empty, self.frames)
        self.frames = self.empty = 0
        self._signature: Any = None
        self.pose.reset()
        self.filter.reset()

    def _starts_shot(self, image: np.ndarray) -> bool:
        """Whether `image` starts a new shot, for callers that do not say (v2v.scenes)."""
        from v2v.scenes import signature, signatures_cut

        current, previous = signature(image), self._signature
        self._signature = current
        return previous is not None and signatures_cut(previous, current)

    def keypoints_of(self, image: np.ndarray, cut: bool | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """COCO-17 keypoints (17, 2) in pixels and their visibility (17,) of the next frame (RGB uint8), smoothed;
        None when no person is found. `cut`: whether the frame starts a new shot (None: found here)."""
        if self._starts_shot(image) if cut is None else cut:
            self.pose.reset()
            self.filter.reset()
        self.frames += 1
        person = self.pose.track(image)
        if person is None:
            self.empty += 1
            self.filter.reset()
            return None
        points = person.points[list(COCO_OF_BLAZEPOSE)]
        if self.smooth:  # in units of the person's size when first seen, so the cutoffs mean the same at any size
            if self.filter.value is None:
                self._scale = max(person.next_region.side, 1.0)
            points = self.filter(points / self._scale) * self._scale
        return points, person.visibility[list(COCO_OF_BLAZEPOSE)]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, cuts: list[bool] | None = None) -> torch.Tensor:
        """Maps for `images`; `cuts`: whether each frame starts a new shot (None: found here, from the frames)."""
        from v2v.diffusion.pose import draw_pose, openpose_points
        from v2v.frames import images_to_tensor, tensor_to_images

        height, width = images.shape[-2:]
        maps = []
        for index, image in enumerate(tensor_to_images(images)):
            self.keypoints = found = self.keypoints_of(image, None if cuts is None else cuts[index])
            if found is None:
                maps.append(np.zeros((height, width, 3), np.uint8))
                continue
            points, visibility = found
            inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
            maps.append(draw_pose(openpose_points(points, np.where(inside, visibility, 0.0), VISIBLE), height, width))
        return images_to_tensor(maps, images.device, images.dtype)
