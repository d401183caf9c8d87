"""The registry of diffusion model families, one module per family under `v2v/diffusion/families/`.

A *family* is an architecture (SD 1.x/2.x, SDXL, InstructPix2Pix, FLUX, SD3, ...) together with everything v2v
must know to make it a video editor. The stages (`v2v.diffusion.stage`) ask only the `Family` interface below;
nothing outside a family module says `if family == ...` or names a family: `detect()` finds the module with
pkgutil, `v2v restyle`/`v2v edit`/`v2v inpaint` accept its models, and their help lines and errors list it
(`families_doing`, `known_list`).

Adding a UNet family, in one file
---------------------------------
1. Write `v2v/diffusion/families/<name>.py`. At module level import only the standard library and light `v2v`
   modules (this one, `v2v.errors`, other family modules); torch/diffusers are imported inside methods, so
   `v2v --help` and `all_families()` stay fast.
2. Subclass `families.sd.StableDiffusion`. It brings cross-frame attention on the UNet's self-attention layers
   (`attn1`, `v2v.diffusion.attention`), the bank's shapes per UNet level, the img2img call and the ControlNet fit
   check.
3. Set `name`, `title`, `pipelines`, `controlnet_classes`, `ip_adapter`, `defaults`, `checkpoint_configs` (see the
   attributes below), and `in_channels` when the UNet reads more than the latents.
4. Write `recognise(info)`, exact (see recognition below).
5. Override what the pipeline does differently: `sdxl.py` sets attributes and `recognise` only,
   `instruct_pix2pix.py` adds image guidance to `call_arguments`.
6. End the module with `register(MyFamily())`.

Adding a DiT family, in one file
--------------------------------
1. As step 1 above.
2. Subclass `families.dit.DiffusionTransformer`. It brings cross-frame attention on the transformer's joint attention
   (`v2v.diffusion.dit_attention`: image queries also read the bank's image keys/values), the bank's shapes from the
   image tokens a frame makes, packed latents, and the keyword arguments every DiT pipeline call takes
   (`call_arguments`: prompts, frames and their size, steps, guidance, generators, the T5 length; strength for the
   img2img kinds; the negative prompt when guided or with `--true-cfg`).
3. Name its cross-frame attention: `cross_frame_processor()` returns the processor class (one of `dit_attention`'s,
   or the family's own `dit_attention.DiTCrossFrameProcessor` subclass, imported inside the method), and
   `gets_cross_frame(layer)` says which keys of `transformer.attn_processors` get it (base: the attention layers of
   `transformer_blocks`).
4. Set `name`, `title`, `pipelines`, `defaults` (`multiple`: the VAE's factor times the patch), `patch`,
   `packed_latents`, `text_tokenizer` and `max_sequence_length`; override `image_tokens` when a frame makes more
   tokens than its own (an edit model's source image).
5. Write `recognise(info)`; extend `call_arguments` with what the pipeline takes besides, drop what it does not.
6. End the module with `register(MyFamily())`. `tests/test_diffusion_family_plugin.py` does exactly this in a test
   module and runs the family through `DiffusionStage` with cross-frame attention.

The Family interface
--------------------
Attributes:
- `name` (what users and errors see: "sd", "sdxl", "flux", ...), `title` (one line for humans);
- `pipelines`: edit kind -> diffusers pipeline class name, for each kind of `KINDS` the family takes,
  e.g. {"restyle": "FluxImg2ImgPipeline", "restyle+controlnet": "FluxControlNetImg2ImgPipeline"};
- `controlnet_classes`: the diffusers class names (config `_class_name`) of the ControlNets it takes;
- `ip_adapter`: an `IPAdapterDefaults` (default weights + image encoder), or None if it takes none;
- `defaults`: a `Defaults` (steps, guidance, strength, image guidance, scheduler, dtype policy, multiple, and the
  working size above which frames are denoised in tiles, `v2v.diffusion.tiles`);
- `tileable`: False where the pipeline puts other image tokens in the sequence (frames are then never tiled);
- `checkpoint_configs`: a hub id whose diffusers configs fit a single-file checkpoint of the family.
Methods, overridden where the family differs from its base:
- recognition: `recognise(info)` says whether a `ModelInfo` (a diffusers folder's model_index.json and
  component configs, or a single file's tensor names and shapes) is of this family. Recognisers must be
  exact (two families never both claim a model), except for single files whose layout two families share
  and that do different edit kinds (FLUX.1 and FLUX.1 Kontext): `detect()` asks every registered family, and
  the command's kind picks between those;
- `claims_lora(shapes)`: whether a LoRA (its tensor names and shapes) was made for this family, to name it when
  another family's base refuses it (`v2v.diffusion.loras`);
- loading: `load()` (base: `<pipelines[kind]>.from_pretrained` / `from_single_file` with configs from a local
  folder, never the hub), `load_controlnet()`, `check_controlnet()`, `load_ip_adapter()`;
- temporal: `cross_frame_attention(pipe, bank)`, a context manager that installs cross-frame attention
  processors on the layers the family chooses and puts the exact previous processors back (build it with
  `v2v.diffusion.attention.install_processors`); `bank_shapes()` says how many tokens of what width each
  hooked layer stores, so the bank's memory can be capped before the first frame; `unpack_latents()` and
  `pack_latents()` say how the pipeline's latents map to a (B, C, h, w) grid over the frame (latent flow
  fusion warps that grid; the base class's latents are the grid already);
- per batch: `call_arguments(pipe, batch)`, the keyword arguments of the pipeline call for one `Batch`;
  the stage adds only latent flow fusion's `callback_on_step_end` (when it is on), so the pipeline must take
  that with "latents" among its tensor inputs, as diffusers' image pipelines do. `guided()` says whether the
  call runs classifier-free guidance and `guidance_groups()` how many copies of each frame a denoiser call
  then sees (2, or 3 for InstructPix2Pix); `true_cfg_kinds` says for which kinds a guidance-distilled family
  takes `--true-cfg` (FLUX.1 and Kontext);
- defaults with code behind them: `dtype(device)`, `multiple(pipe)` (frames are padded to it, with a line
  saying so), `denoising_steps()` (for the bank's size), `kind()` (the refusal pointing to the other command),
  `ip_adapter_embeds()`.

Edit kinds (`KINDS`): "restyle" (img2img), "restyle+controlnet" (img2img held by one or more ControlNets),
"edit" (instruction editing: the source frame is the image the editor sees), "edit+controlnet", "inpaint" (repaint
where `Batch.masks` is white), "inpaint+controlnet".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v2v.diffusion.checkpoints import read_tensor_shapes
from v2v.errors import ModelError, UsageError, require
from v2v.plugins import import_all

if TYPE_CHECKING:
    import torch

    from v2v.diffusion.attention import FrameBank

log = logging.getLogger(__name__)

KINDS = ("restyle", "restyle+controlnet", "edit", "edit+controlnet", "inpaint", "inpaint+controlnet")
# the command behind each base kind
COMMAND_OF_KIND = {"restyle": "v2v restyle", "edit": "v2v edit", "inpaint": "v2v inpaint"}
WHAT_KIND_DOES = {"restyle": "restyle (img2img)", "edit": "follow instructions", "inpaint": "inpaint"}
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclasses.dataclass(frozen=True)
class Defaults:
    """A family's sensible defaults, used where the user gave nothing.

    steps, guidance, strength: as diffusers' pipelines take them (strength only for img2img kinds).
    image_guidance: how strongly an instruction editor holds to the source image (InstructPix2Pix), else None.
    scheduler: a name of `models.SCHEDULERS`, or None to keep the model's own.
    half: fp16 on CUDA (True) or bf16 (False, for models that overflow in fp16). The CPU always runs fp32.
    multiple: frame sides must be multiples of this (None: the VAE's scale factor); other sizes are padded.
    tile, tile_overlap: the working size in pixels; larger frames are denoised in tiles of it, neighbours sharing
    `tile_overlap` pixels (`v2v.diffusion.tiles`).
    """

    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.5
    image_guidance: float | None = None
    scheduler: str | None = None
    half: bool = True
    multiple: int | None = None
    tile: int = 512
    tile_overlap: int = 128


@dataclasses.dataclass(frozen=True)
class IPAdapterDefaults:
    """The IP-Adapter a family uses when the user names none: `weights` (a hub path `org/repo/path/file` or a
    local file) and `files_hint`, the `hf download` file arguments that fetch it with its image encoder."""

    weights: str
    files_hint: str


@dataclasses.dataclass
class ModelInfo:
    """What recognisers look at, read without loading any weights.

    path: the resolved local path. For a diffusers folder, `index` is its model_index.json and `config(name)`
    reads `name/config.json` (e.g. "unet", "transformer"). For a single file, `tensors` maps each tensor name to
    its shape (safetensors headers; .ckpt files are opened memory-mapped) and `index` is empty.
    """

    path: Path
    index: dict[str, Any] = dataclasses.field(default_factory=dict)
    tensors: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    _configs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def is_file(self) -> bool:
        return self.path.is_file()

    @property
    def class_name(self) -> str:
        """The pipeline class model_index.json names ("" for single files)."""
        return str(self.index.get("_class_name", ""))

    def config(self, component: str) -> dict[str, Any]:
        """`component/config.json` of a diffusers folder ({} when absent or unreadable)."""
        if component not in self._configs:
            try:
                self._configs[component] = json.loads((self.path / component / "config.json").read_text())
            except (OSError, ValueError):
                self._configs[component] = {}
        return self._configs[component]

    def has(self, prefix: str) -> bool:
        """Whether a single file holds a tensor whose name starts with `prefix`."""
        return any(name.startswith(prefix) for name in self.tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.tensors.get(name)


@dataclasses.dataclass
class Batch:
    """One pipeline call's worth of frames and settings, as the stage hands it to `Family.call_arguments`.

    images: (B, 3, H, W) float in [0, 1] on the pipeline's device, H and W multiples of the family's multiple.
    generators: one per frame (the same seed for every frame of a shot when temporal is on).
    control_images: one (B, 3, H, W) float [0, 1] map per ControlNet; control_scales: one scale each;
    control_modes: the mode of each union ControlNet (e.g. canny, depth; the model card numbers them), may be empty.
    ip_adapter_embeds: the reference's embeds as `prepare_ip_adapter_image_embeds` gave them for ONE image
    (the pipeline repeats them for the batch), or None.
    masks: for inpaint kinds, (B, 1, H, W) float in {0, 1} (1 = repaint), padded like `images`; else None.
    """

    kind: str
    images: torch.Tensor
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    strength: float
    image_guidance: float | None
    generators: list[torch.Generator]
    control_images: list[torch.Tensor] = dataclasses.field(default_factory=list)
    control_scales: list[float] = dataclasses.field(default_factory=list)
    control_modes: list[int] = dataclasses.field(default_factory=list)  # union ControlNets: the mode of each
    ip_adapter_embeds: list[torch.Tensor] | None = None
    masks: torch.Tensor | None = None
    true_cfg: float | None = None  # `--true-cfg`: the scale of the negative prompt's pass (None: no such pass)

    @property
    def count(self) -> int:
        return int(self.images.shape[0])


class Family:
    """An image-diffusion family: how its models are recognised and loaded, what it calls per batch, which
    controls it takes, where cross-frame attention goes, and its defaults. See the module docstring."""

    name: str = ""
    title: str = ""
    pipelines: Mapping[str, str] = {}
    controlnet_classes: tuple[str, ...] = ()
    ip_adapter: IPAdapterDefaults | None = None
    defaults: Defaults = Defaults()
    checkpoint_configs: str | None = None  # hub id with diffusers configs for this family's single files
    takes_negative_prompt = True  # False: guidance-distilled, one pass a step (a negative prompt is ignored)
    # kinds whose pipeline runs "true CFG" (`--true-cfg`: a second pass a step on the negative prompt) for a
    # guidance-distilled family; its `call_arguments` then pass `Batch.true_cfg` as `true_cfg_scale`
    true_cfg_kinds: tuple[str, ...] = ()
    # whether frames above the working size may be denoised in tiles (False where the pipeline puts other image
    # tokens in the sequence, as edit DiTs do with the source's: `v2v.diffusion.tiles`)
    tileable = True
    video = False  # True: a video family (`families/video.py`), run by `video_stage.VideoModelStage`

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    # --- recognition ------------------------------------------------------------------------------------

    def recognise(self, info: ModelInfo) -> bool:
        """Whether the model described by `info` belongs to this family (exactly: no two families overlap)."""
        raise NotImplementedError

    def single_file_configs(self, info: ModelInfo) -> str:
        """The hub id (or folder) whose diffusers configs fit the single-file checkpoint `info`."""
        if not self.checkpoint_configs:
            raise ModelError(f"{self.title} has no single-file loader; pass its diffusers folder")
        return self.checkpoint_configs

    def claims_lora(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether a LoRA with these tensor names and shapes was made for this family (to name it when another
        family's base refuses it; `v2v.diffusion.loras`). Base: no family is named."""
        return False

    def kind(self, base: str, controlnets: int) -> str:
        """The edit kind for a command's `base` kind ("restyle" or "edit") with `controlnets` ControlNets;
        UsageError (one line, pointing to the right command) when the family cannot do it."""
        kind = f"{base}+controlnet" if controlnets else base
        if kind in self.pipelines:
            return kind
        if base in self.pipelines:
            raise UsageError.naming("{title} models take no ControlNet in {command}; drop {controlnets}",
                                    title=self.title, command=COMMAND_OF_KIND[base])
        other = next((k for k in ("edit", "restyle", "inpaint") if k in self.pipelines), None)
        if other is not None:
            instruction = " {instruction} '...'" if other == "edit" else ""
            raise UsageError.naming(
                "{title} models do not {does}: use `{command}" + instruction + "` for this model, or pick a model of a "
                "family that does ({able})", title=self.title, does=WHAT_KIND_DOES[base],
                command=COMMAND_OF_KIND[other], able=", ".join(f.name for f in families_doing(base)),
            )
        raise UsageError(f"{self.title} models take no {kind}")

    # --- loading -----------------------------------------------------------------------------------------

    def dtype(self, device: torch.device) -> torch.dtype:
        """The compute dtype when the user names none: fp32 on the CPU, fp16 (or bf16) on CUDA."""
        from v2v.devices import default_dtype

        return default_dtype(device, half=self.defaults.half, cpu_bfloat16=False)

    def load(
        self,
        info: ModelInfo,
        kind: str,
        controlnets: list[Any],
        *,
        model: str,
        device: torch.device,
        dtype: torch.dtype,
        model_config: str | None,
    ) -> Any:
        """The diffusers pipeline `pipelines[kind]` for the model in `info`, on `device` in `dtype`.

        A diffusers folder (or hub id) loads with `from_pretrained`; a single-file checkpoint with
        `from_single_file`, its diffusers configs from `model_config` (a folder or hub id) or else the
        family's configs (from the Hugging Face cache, or their configs alone downloaded: `resolve_path`).
        """
        require("diffusers", "diffusion")
        require("transformers", "diffusion")
        import diffusers

        from v2v.diffusion.hub import CONFIGS
        from v2v.diffusion.models import dtype_argument, first_line, resolve_path

        cls = getattr(diffusers, self.pipelines[kind])
        extra: dict[str, Any] = (
            {"controlnet": controlnets if len(controlnets) > 1 else controlnets[0]} if controlnets else {}
        )
        path = info.path
        try:
            if info.is_file:
                config = resolve_path(
                    model_config or self.single_file_configs(info),
                    "diffusers configs for the single-file checkpoint",
                    "--include '*.json' '*.txt'",
                    "pass {model_config} FOLDER (a diffusers folder of the same architecture)",
                    files=CONFIGS,
                )
                pipe = cls.from_single_file(
                    str(path), config=str(config), local_files_only=True, **extra, **dtype_argument(dtype)
                )
                self.adjust_single_file(pipe, info, model_config)
            else:
                if "safety_checker" in info.index:  # SD 1.x folders list one; v2v never runs it
                    extra["safety_checker"] = None
                pipe = cls.from_pretrained(str(path), local_files_only=True, **extra, **dtype_argument(dtype))
        except ModelError:
            raise
        except Exception as exc:  # diffusers raises many kinds here (SingleFileComponentError is a bare Exception)
            single = info.is_file and not model_config
            hint = " (pass {model_config} with a diffusers folder of the same architecture)" if single else ""
            raise ModelError.naming("cannot load base model {model!r}: {why}" + hint, model=model,
                                    why=first_line(exc)) from exc
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def adjust_single_file(self, pipe: Any, info: ModelInfo, model_config: str | None) -> None:
        """Fix up a pipeline loaded from a single file (e.g. its scheduler's prediction type)."""

    def load_controlnet(self, name: str, dtype: torch.dtype, model: str) -> Any:
        """A ControlNet of this family from a diffusers folder, a single file, or a hub id; ModelError when
        it is missing or made for another family. Its config's class is checked first, so a ControlNet of another
        family is refused before anything big is loaded."""
        require("diffusers", "diffusion")
        import diffusers

        from v2v.diffusion.models import dtype_argument, first_line, resolve_path

        path = resolve_path(name, "ControlNet")
        config = path / "config.json" if path.is_dir() else path.parent / "config.json"
        if not config.exists():
            if path.is_file():  # diffusers would fetch a config from the hub when none is at hand; v2v asks for it
                raise ModelError(
                    f"single-file ControlNet {name!r} needs its diffusers config.json beside it (e.g. from "
                    "lllyasviel/control_v11p_sd15_canny), or pass the ControlNet's diffusers folder"
                )
            raise ModelError(f"ControlNet {name!r} is a folder without config.json; pass a diffusers ControlNet folder")
        class_name = str(json.loads(config.read_text()).get("_class_name", ""))
        if class_name not in self.controlnet_classes:
            owners = " or ".join(f.title for f in controlnet_families(class_name))
            made_for = f"a {owners} ControlNet" if owners else f"a {class_name or 'model of unknown class'}"
            raise ModelError(
                f"ControlNet {name!r} is {made_for}, but base model {model!r} is {self.title}; pass a ControlNet made "
                f"for {self.title}"
            )
        cls = getattr(diffusers, class_name)
        try:
            if path.is_file():
                return cls.from_single_file(
                    str(path), config=str(path.parent), local_files_only=True, **dtype_argument(dtype)
                )
            return cls.from_pretrained(str(path), local_files_only=True, **dtype_argument(dtype))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load ControlNet {name!r}: {first_line(exc)}") from exc

    def check_controlnet(self, controlnet: Any, pipe: Any, name: str, model: str) -> None:
        """Raise ModelError when `controlnet` (of the right class) was made for another base than `pipe`'s."""

    def load_ip_adapter(self, pipe: Any, name: str | None, image_encoder: str | None, scale: float) -> None:
        """Load an IP-Adapter (this family's default when `name` is None) and its CLIP image encoder into `pipe`,
        at `scale`. ModelError when it was made for another base (its width differs from the denoiser's text width)."""
        if self.ip_adapter is None:
            raise UsageError(f"{self.title} models take no IP-Adapter in v2v")
        from transformers import CLIPVisionModelWithProjection

        from v2v.diffusion.models import (
            find_image_encoder,
            first_line,
            image_encoder_files,
            ip_adapter_file,
            ip_adapter_width,
            resolve_path,
        )

        default = self.ip_adapter
        name = name or default.weights
        files = image_encoder_files(name, image_encoder)
        weights = ip_adapter_file(resolve_path(name, "IP-Adapter", default.files_hint, files=files))
        width, ours = ip_adapter_width(weights), self.text_width(pipe)
        if width is not None and ours is not None and width != ours:
            raise ModelError(
                f"IP-Adapter {weights.name} was made for a base with text width {width}, but base model is "
                f"{self.title} with {ours}; pass one made for {self.title} (default {default.weights})"
            )
        encoder_path = find_image_encoder(weights, image_encoder)
        try:
            encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_path), dtype=pipe.dtype)
            pipe.register_modules(image_encoder=encoder.to(pipe.device))
            pipe.load_ip_adapter(str(weights.parent), subfolder="", weight_name=weights.name, image_encoder_folder=None)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"cannot load IP-Adapter {weights}: {first_line(exc)}") from exc
        pipe.set_ip_adapter_scale(scale)

    def text_width(self, pipe: Any) -> int | None:
        """The width of the text states the denoiser attends to (what an IP-Adapter's projections take)."""
        return self.denoiser(pipe).config.get("cross_attention_dim")

    def ip_adapter_embeds(self, pipe: Any, reference: Any, device: torch.device, guided: bool) -> list[Any]:
        """The reference image's IP-Adapter embeds for one image (the pipeline repeats them per frame)."""
        return list(pipe.prepare_ip_adapter_image_embeds(reference, None, device, 1, guided))

    # --- temporal ----------------------------------------------------------------------------------------

    def denoiser(self, pipe: Any) -> Any:
        """The network whose attention gets cross-frame attention (a UNet or a transformer)."""
        return pipe.unet if hasattr(pipe, "unet") else pipe.transformer

    def cross_frame_attention(self, pipe: Any, bank: FrameBank) -> AbstractContextManager[None]:
        """A context manager installing cross-frame attention processors on the family's chosen layers and
        putting the exact previous processors back on exit."""
        raise NotImplementedError

    def bank_shapes(self, pipe: Any, height: int, width: int) -> list[tuple[int, int]]:
        """(tokens, key width) per layer with cross-frame attention, for frames of height x width pixels
        (padded), per denoising step and per guidance group: what one stored frame costs."""
        raise NotImplementedError

    def denoising_steps(self, kind: str, steps: int, strength: float) -> int:
        """How many denoiser calls a frame takes (img2img runs steps x strength of them)."""
        return min(steps, int(steps * strength)) if kind.startswith(("restyle", "inpaint")) else steps

    def unpack_latents(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's latents, as `callback_on_step_end` gets them, for frames of height x width pixels
        (padded) as a (B, C, h, w) grid over the frame (the VAE's latent image), for latent flow fusion.
        Base: they are that grid already (UNets, SD3); families that pack patches into tokens override both."""
        return latents

    def pack_latents(self, pipe: Any, grid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`unpack_latents` undone: the (B, C, h, w) grid in the layout of `like` (the pipeline's latents)."""
        return grid

    def multiple(self, pipe: Any) -> int:
        """Frame sides must be multiples of this (frames of other sizes are padded and cut back)."""
        return int(self.defaults.multiple or getattr(pipe, "vae_scale_factor", 8))

    # --- per batch ---------------------------------------------------------------------------------------

    def guided(self, pipe: Any, guidance: float, image_guidance: float | None) -> bool:
        """Whether the pipeline runs classifier-free guidance at these settings (as diffusers decides it)."""
        return guidance > 1.0

    def guidance_groups(self, guided: bool) -> int:
        """How many copies of each frame one denoiser call sees (2 with classifier-free guidance)."""
        return 2 if guided else 1

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        """Keyword arguments of `pipe(...)` for `batch` (output_type "pt", so images come back as
        (B, 3, H, W) float in [0, 1])."""
        raise NotImplementedError

    # --- the prompt, encoded once a run ------------------------------------------------------------------

    text_reads_image = False  # True: the text encoder reads each frame too (Qwen-Image-Edit), so nothing is cached

    def encode_text(self, pipe: Any, prompt: str, negative: str | None, **options: Any) -> dict[str, torch.Tensor]:
        """The pipeline's own encoding of `prompt` (and `negative`; None when the call has no negative pass) for ONE
        image, as the keyword arguments its call takes in place of the strings (`prompt_embeds`, ...). `options`:
        what else the encoder reads (the T5 length)."""
        raise NotImplementedError

    def text_arguments(self, pipe: Any, batch: Batch, negative: str | None, **options: Any) -> dict[str, Any]:
        """The prompt and negative prompt of a pipeline call, as embeddings: each distinct (prompt, negative,
        options) is encoded once a run (cached on the pipeline, which lives as long as the stage) and repeated for
        the batch's frames, so the text encoders (T5-XXL for FLUX and SD3) run once, not once a frame."""
        if self.text_reads_image:
            texts = {"prompt": [batch.prompt] * batch.count}
            return texts if negative is None else {**texts, "negative_prompt": [negative] * batch.count}
        cache: dict[tuple[Any, ...], dict[str, torch.Tensor]] | None = getattr(pipe, "v2v_text", None)
        if cache is None:
            pipe.v2v_text = cache = {}
        key = (batch.prompt, negative, tuple(sorted(options.items())))
        if key not in cache:
            import torch

            with torch.inference_mode():
                encoded = self.encode_text(pipe, batch.prompt, negative, **options)
            cache[key] = {name: value for name, value in encoded.items() if value is not None}
        return {name: _repeated(value, batch.count) for name, value in cache[key].items()}


def _repeated(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """One image's embedding (1, ...) for `count` frames; a copy, as pipelines may change what they are handed."""
    return tensor.repeat(count, *[1] * (tensor.dim() - 1)) if count > 1 else tensor


# --- the registry ------------------------------------------------------------------------------------------

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (called by family modules at import); names are unique."""
    if not family.name or not family.pipelines:
        raise ValueError(f"family {family!r} needs a name and at least one pipeline")
    unknown = set(family.pipelines) - set(KINDS)
    if unknown:
        raise ValueError(f"family {family.name}: unknown edit kinds {sorted(unknown)}; known: {KINDS}")
    other = _FAMILIES.get(family.name)
    if other is not None and type(other) is not type(family):
        raise ValueError(f"family name {family.name!r} is taken by {type(other).__name__}")
    _FAMILIES[family.name] = family
    return family


def _load_all() -> None:
    import_all("v2v.diffusion.families")


def all_families() -> list[Family]:
    """Every registered family, by name."""
    _load_all()
    return [_FAMILIES[name] for name in sorted(_FAMILIES)]


def lookup(name: str) -> Family:
    """The family called `name`; UsageError listing the known ones otherwise."""
    _load_all()
    if name not in _FAMILIES:
        raise UsageError(f"no diffusion family is called {name!r}; known: {known_list()}")
    return _FAMILIES[name]


def families_doing(base: str) -> list[Family]:
    """The families that take base kind `base` ("restyle", "edit" or "inpaint"), by name."""
    return [family for family in all_families() if base in family.pipelines]


def known_list() -> str:
    return ", ".join(f"{family.name} ({family.title})" for family in all_families())


def controlnet_families(class_name: str) -> list[Family]:
    """The image families whose ControlNets are of diffusers class `class_name` (a video family borrowing them,
    AnimateDiff, is not where they come from)."""
    return [family for family in all_families()
            if class_name in family.controlnet_classes and not getattr(family, "video", False)]


def model_info(path: Path) -> ModelInfo:
    """A `ModelInfo` for a resolved local path (a diffusers folder or a single file)."""
    if path.is_file():
        return ModelInfo(path, tensors=read_tensor_shapes(path))
    index_path = path / "model_index.json"
    if not index_path.exists():
        raise ModelError(f"base model {os.fspath(path)} is a folder without model_index.json; pass a diffusers folder")
    try:
        index = json.loads(index_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{index_path} is not valid JSON: {exc}") from None
    return ModelInfo(path, index=index)


def detect(
    model: str, model_config: str | None = None, kind: str | None = None, motion_adapter: str | None = None
) -> tuple[Family, ModelInfo]:
    """The family of base model `model` (a diffusers folder, a single file or a hub id) and what was read
    of it. ModelError (one line) for a model no family takes, listing the known families; for a single file
    whose family can't be told, saying how to pass a folder instead. `kind` (the command's: "restyle", "edit",
    "inpaint") chooses between families that share a single file's layout. With a `motion_adapter`, the family is
    the video family that animates the base model's (`animates`: AnimateDiff animates SD 1.5); UsageError (one line)
    when none does."""
    if motion_adapter:
        base, info = detect(model, model_config, kind)
        animating = [family for family in all_families() if base.name in getattr(family, "animates", ())]
        if not animating:
            what = " or ".join(family.animates_what for family in all_families() if getattr(family, "animates", ()))
            raise UsageError.naming("{motion_adapter} animates {what}; {model!r} is {title}: pass such a base "
                                    "model, or drop {motion_adapter}", what=what or "no family's models", model=model,
                                    title=base.title)  # fmt: skip
        return animating[0], info
    from v2v.diffusion.hub import CONFIGS
    from v2v.diffusion.models import resolve_path

    path = resolve_path(model, "base model", "--exclude '*.ckpt' '*.bin'")
    info = model_info(path)
    found = [family for family in all_families() if family.recognise(info)]
    if len(found) > 1 and kind is not None:
        doing = [family for family in found if kind in family.pipelines]
        if len(doing) == 1:
            log.info("single file %s fits %s; taken as %s, the one that does %s (pass a diffusers folder to be "
                     "sure)", model, " and ".join(f.title for f in found), doing[0].title, kind)  # fmt: skip
            return doing[0], info
        if not doing:
            return found[0], info  # none of them does `kind`; the caller refuses it, naming the right command
    if len(found) > 1:  # a recogniser bug; say so rather than pick silently
        log.warning("base model %s is claimed by families %s; using %s", model, [f.name for f in found], found[0].name)
    if found:
        return found[0], info
    if info.is_file and model_config:  # the configs the user gave say which architecture it is
        configs = resolve_path(model_config, "diffusers configs for the single-file checkpoint", files=CONFIGS)
        config_info = model_info(configs)
        for family in all_families():
            if family.recognise(config_info):
                return family, info
    if info.is_file:
        raise ModelError.naming(
            "cannot tell which family single file {path!r} is (known: {known}); pass the model's diffusers folder as "
            "{model}, or {model_config} FOLDER with a diffusers folder of the same architecture",
            path=model, known=known_list(),
        )
    what = info.class_name or "a pipeline without _class_name"
    raise ModelError(f"base model {model!r} is {what}, which no v2v family takes; known families: {known_list()}")
