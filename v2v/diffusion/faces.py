"""Faces for InstantID: where a face is and its five keypoints (MediaPipe's face detector), and the identity embedding
of a face photo (an ArcFace ONNX model the user gives).

Detection runs MediaPipe's BlazeFace short-range model, `face_detection_short_range.tflite` from the `mediapipe`
wheel (Apache-2.0), found by its folder (the package itself is never imported: it pins NumPy below 2) and run by
`ai-edge-litert`. It gives a box and six keypoints: both eyes, the nose tip, the mouth's centre and both ear tragions.
InstantID (insightface's five points) wants the eyes, the nose and the two mouth *corners*, which BlazeFace does not
give. They come from MediaPipe's face mesh (`face_landmark.tflite`, 468 points, from the same wheel): the face's box
grown 1.5 times, turned upright by the eye line, as MediaPipe's own graph crops it, at 192x192 in [0, 1]; points 61 and
291 are the mouth's corners. Where the mesh model says it sees no face there, the corners are placed on the line
through the mouth's centre parallel to the eyes, half a mouth width either side (the width as ArcFace's alignment
template has it, 0.828 of the distance between the eyes). The points are ordered as insightface orders them: the eye on
the image's left first, the mouth corner on the image's left first.

The identity embedding: the photo's face (the largest) aligned to ArcFace's 112x112 template by a similarity transform
of its five points (as insightface's `norm_crop` does), pixels (RGB - 127.5) / 127.5, through the ONNX model with
onnxruntime; the raw (not normalised) embedding, which is what InstantID's pipeline feeds its face adapter.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from v2v.errors import InputError, ModelError, require

DETECTOR = "modules/face_detection/face_detection_short_range.tflite"
MESH = "modules/face_landmark/face_landmark.tflite"
INPUT_SIDE = 128
MESH_SIDE = 192
MESH_GROWTH = 1.5  # the mesh model's crop: the detector's box grown this much, square
MOUTH_CORNERS = (61, 291)  # the face mesh's mouth corners: the subject's right (the image's left), then left
MIN_SCORE = 0.5
OVERLAP = 0.3  # boxes overlapping more than this are one face (MediaPipe's weighted suppression)
# insightface's ArcFace alignment template for 112x112 crops: left eye, right eye, nose, left and right mouth corners
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float32)  # fmt: skip
MOUTH_TO_EYES = float(np.linalg.norm(ARCFACE_TEMPLATE[4] - ARCFACE_TEMPLATE[3])
                      / np.linalg.norm(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0]))  # fmt: skip


@dataclasses.dataclass
class Face:
    """One detected face, in pixels of the image it was found in: `box` (left, top, right, bottom), `points` (5, 2)
    (x, y) in insightface's order (eyes, nose, mouth corners), and the detector's `score`."""

    box: tuple[float, float, float, float]
    points: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def _anchors() -> np.ndarray:
    """BlazeFace short-range's 896 SSD anchor centres (x, y) in [0, 1]: a 16x16 grid with 2 anchors a cell (stride
    8), then an 8x8 grid with 6 (three layers of stride 16, 2 each)."""
    centres = []
    for cells, per_cell in ((16, 2), (8, 6)):
        for y in range(cells):
            for x in range(cells):
                centres += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
    return np.asarray(centres, np.float32)


def mediapipe_file(name: str) -> Path:
    """A model file inside the installed `mediapipe` wheel; one line saying how to get it otherwise."""
    from v2v.weights import MEDIAPIPE_INSTALL, package_file

    return package_file("mediapipe", name, MEDIAPIPE_INSTALL, "InstantID's face detector")


class FaceDetector:
    """MediaPipe's BlazeFace short-range detector and face mesh (see the module docstring); `faces(image)` gives every
    face of an RGB uint8 (H, W, 3) image, best first. Faces up to a couple of metres from the camera, as BlazeFace's
    short-range model is made for."""

    def __init__(self) -> None:
        require("ai_edge_litert", "masks")
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(mediapipe_file(DETECTOR)))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        outputs = {tuple(d["shape"])[-1]: d["index"] for d in self.interpreter.get_output_details()}
        self.boxes, self.scores = outputs[16], outputs[1]
        self.anchors = _anchors()
        self.mesh = Interpreter(model_path=str(mediapipe_file(MESH)))
        self.mesh.allocate_tensors()
        self.mesh_input = self.mesh.get_input_details()[0]["index"]
        mesh_outputs = {tuple(d["shape"])[-1]: d["index"] for d in self.mesh.get_output_details()}
        self.mesh_points, self.mesh_flag = mesh_outputs[468 * 3], mesh_outputs[1]

    def faces(self, image: np.ndarray) -> list[Face]:
        import cv2

        height, width = image.shape[:2]
        side = max(height, width)  # letterboxed to a square, as MediaPipe keeps the aspect ratio
        top, left = (side - height) // 2, (side - width) // 2
        square = cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT)
        pixels = cv2.resize(square, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
        self.interpreter.set_tensor(self.input, (pixels / 127.5 - 1.0)[None])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.boxes)[0]
        logits = np.clip(self.interpreter.get_tensor(self.scores)[0, :, 0].astype(np.float64), -100, 100)
        scores = 1 / (1 + np.exp(-logits))
        keep = np.flatnonzero(scores >= MIN_SCORE)
        if not keep.size:
            return []
        # decoded in [0, 1] of the square: centre offsets, sizes and keypoints all in units of the input's side
        values = raw[keep] / INPUT_SIDE
        centres = self.anchors[keep]
        middle, half = centres + values[:, :2], values[:, 2:4] / 2
        boxes = np.concatenate([middle - half, middle + half], axis=1)
        points = values[:, 4:16].reshape(-1, 6, 2) + centres[:, None]
        found = []
        for members, weights in _suppressed(boxes, scores[keep]):
            box = (boxes[members] * weights[:, None]).sum(0) / weights.sum()
            six = (points[members] * weights[:, None, None]).sum(0) / weights.sum()
            to_pixels = np.array([side, side], np.float32)
            offset = np.array([left, top], np.float32)
            corners = box.reshape(2, 2) * to_pixels - offset
            points = five_points(six * to_pixels - offset)
            box_pixels = tuple(float(v) for v in corners.reshape(-1))
            mouth = self._mouth_corners(image, box_pixels, points[:2])
            if mouth is not None:
                points[3:] = mouth
            found.append(Face(box_pixels, points, float(weights.max())))  # type: ignore[arg-type]
        return found

    def _mouth_corners(self, image: np.ndarray, box: tuple[float, ...], eyes: np.ndarray) -> np.ndarray | None:
        """The mouth's corners (2, 2), the image's left first, from the face mesh model on the face's upright crop;
        None where the mesh model sees no face."""
        import cv2

        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
        half = MESH_GROWTH * max(box[2] - box[0], box[3] - box[1]) / 2
        across = (eyes[1] - eyes[0]) / max(float(np.linalg.norm(eyes[1] - eyes[0])), 1e-6)
        down = np.array([-across[1], across[0]], np.float32)
        corners = np.float32([centre - half * (across + down), centre + half * (across - down),
                              centre - half * (across - down)])  # fmt: skip
        square = np.float32([[0, 0], [MESH_SIDE, 0], [0, MESH_SIDE]])
        matrix = cv2.getAffineTransform(corners, square)
        crop = cv2.warpAffine(image, matrix, (MESH_SIDE, MESH_SIDE)).astype(np.float32) / 255
        self.mesh.set_tensor(self.mesh_input, crop[None])
        self.mesh.invoke()
        if float(self.mesh.get_tensor(self.mesh_flag).reshape(-1)[0]) < 0:  # a logit: below 0, no face
            return None
        points = self.mesh.get_tensor(self.mesh_points).reshape(468, 3)[list(MOUTH_CORNERS), :2]
        back = cv2.invertAffineTransform(matrix)
        mouth = points @ back[:, :2].T + back[:, 2]
        return mouth[np.argsort(mouth[:, 0])].astype(np.float32)


def _suppressed(boxes: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression: the best box and every box overlapping it by more than
    `OVERLAP` are one face (averaged, weighted by score); then the best of the rest, and so on."""
    order = list(np.argsort(-scores))
    groups = []
    while order:
        best = order[0]
        overlaps = np.array([_iou(boxes[best], boxes[other]) for other in order])
        members = np.array(order)[overlaps > OVERLAP]
        groups.append((members, scores[members]))
        order = [other for other, overlap in zip(order, overlaps, strict=True) if overlap <= OVERLAP]
    return groups


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def five_points(six: np.ndarray) -> np.ndarray:
    """BlazeFace's six keypoints (right eye, left eye, nose tip, mouth centre, ears: the subject's sides) -> InstantID's
    five (eye on the image's left, the other eye, nose, mouth corner on the image's left, the other corner), the mouth
    corners placed along the eye line (the fallback where the face mesh sees no face)."""
    eyes = six[:2][np.argsort(six[:2, 0])]  # the image's left first
    across = (eyes[1] - eyes[0]) * (MOUTH_TO_EYES / 2)
    mouth = six[3]
    return np.stack([eyes[0], eyes[1], six[2], mouth - across, mouth + across]).astype(np.float32)


def aligned_face(image: np.ndarray, points: np.ndarray, side: int = 112) -> np.ndarray:
    """The face with these five points, moved by a similarity transform onto ArcFace's template, `side` pixels square
    (RGB uint8)."""
    import cv2

    template = ARCFACE_TEMPLATE * (side / 112)
    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:
        raise InputError("the face's keypoints are degenerate; give a photo with a clearer face")
    return cv2.warpAffine(image, matrix, (side, side), borderValue=0)


class FaceEncoder:
    """An ArcFace ONNX model (insightface's layout: (N, 3, S, S) RGB in [-1, 1] -> (N, D)), run with onnxruntime."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        require("onnxruntime", "masks")
        import onnxruntime

        text = os.fspath(path)
        if not os.path.isfile(text):
            raise ModelError(f"face encoder {text} not found; pass an ArcFace ONNX model (e.g. insightface's "
                             "antelopev2 glintr100.onnx)")
        try:
            self.session = onnxruntime.InferenceSession(text, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own kinds)
            raise ModelError(f"face encoder {text} is not an ONNX model onnxruntime can run: "
                             f"{str(exc).splitlines()[0]}") from None
        shape = self.session.get_inputs()[0].shape
        self.side = shape[-1] if isinstance(shape[-1], int) else 112
        self.path = text

    def embed(self, face: np.ndarray) -> np.ndarray:
        """The embedding (float32 (D,)) of an aligned face, RGB uint8 (side, side, 3)."""
        pixels = (face.astype(np.float32) - 127.5) / 127.5
        feed = {self.session.get_inputs()[0].name: pixels.transpose(2, 0, 1)[None]}
        return np.asarray(self.session.run(None, feed)[0], np.float32).reshape(-1)


def identity_embedding(photo: str | os.PathLike[str], encoder: FaceEncoder, detector: FaceDetector) -> np.ndarray:
    """The identity embedding of the largest face in `photo`; InputError (one line) when it has none."""
    from PIL import Image

    text = os.fspath(photo)
    try:
        with Image.open(text) as opened:
            image = np.asarray(opened.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the identity photo {text}: {exc}") from None
    faces = detector.faces(image)
    if not faces:
        raise InputError(f"no face found in the identity photo {text}; give a photo with one face, seen from the front "
                         "and not too small")
    face = max(faces, key=lambda found: found.area)
    return encoder.embed(aligned_face(image, face.points, encoder.side))


def keypoint_image(points: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """InstantID's IdentityNet condition: RGB uint8 (H, W, 3), black with the five keypoints drawn as its authors draw
    them (a limb from each eye and mouth corner to the nose, in the colour of its outer point, at 0.6 brightness; a
    disc on each point in red, green, blue, yellow, magenta). Their stick width 4 and disc radius 10 are for ~1024-pixel
    images; here they scale with the frame's longer side. No points: all black."""
    import cv2

    canvas = np.zeros((height, width, 3), np.float32)
    if points is None:
        return canvas.astype(np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    scale = max(height, width) / 1024
    stick, radius = max(1, round(4 * scale)), max(1, round(10 * scale))
    for outer in (0, 1, 3, 4):
        (x0, y0), (x1, y1) = points[outer], points[2]
        length = float(np.hypot(x0 - x1, y0 - y1))
        angle = int(np.degrees(np.arctan2(y0 - y1, x0 - x1)))
        polygon = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), stick), angle, 0, 360, 1)
        canvas = cv2.fillConvexPoly(canvas, polygon, colours[outer])
    canvas *= 0.6
    for colour, (x, y) in zip(colours, points, strict=True):
        canvas = cv2.circle(canvas, (int(x), int(y)), radius, colour, -1)
    return canvas.astype(np.uint8)


def face_points(detector: FaceDetector, image: np.ndarray) -> Any:
    """The five points of the largest face in `image`, or None."""
    faces = detector.faces(image)
    return max(faces, key=lambda found: found.area).points if faces else None
