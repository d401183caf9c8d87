"""FLUX.1 (dev, schnell and fine-tunes): img2img with `FluxImg2ImgPipeline`, held by one or more FLUX ControlNets
(union ones too) with `FluxControlNetImg2ImgPipeline`, styled by a reference image through a FLUX IP-Adapter (XLabs
layout, through the pipeline's `load_ip_adapter`) or FLUX Redux (`--ip-adapter-model` a `FluxPriorReduxPipeline`
folder: the reference's SigLIP tokens, times `--ip-adapter-scale`, follow the prompt's T5 tokens; none at 0).

FLUX is a diffusion transformer: 19 double-stream blocks (text and image streams with their own weights, one joint
attention) then 38 single-stream blocks (one sequence, text first). Cross-frame attention goes on every one of
them (`v2v.diffusion.dit_attention.FluxCrossFrameProcessor`): the image queries also read the anchor's and the
previous frame's image keys/values, banked after FLUX's rotary embedding. FLUX.1-dev is guidance-distilled (the
guidance is an input, one pass per step), so a frame is one row of the transformer's batch. `--true-cfg S` with a
negative prompt adds diffusers' "true CFG": a second transformer call a step on the negative prompt, with its own
bank slots (the call clock of `dit_attention` counts the passes of a step), so neither pass reads the other's keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from v2v.diffusion.families.dit import DiffusionTransformer
from v2v.diffusion.registry import Batch, Defaults, IPAdapterDefaults, ModelInfo, register
from v2v.errors import ModelError, UsageError

if TYPE_CHECKING:
    import torch

    from v2v.diffusion.dit_attention import DiTCrossFrameProcessor

FLUX_PIPELINES = ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxControlNetPipeline",
                  "FluxControlNetImg2ImgPipeline", "FluxControlNetInpaintPipeline")  # fmt: skip
FLUX_ORIGINAL = "double_blocks.0.img_attn.qkv.weight"  # single files in Black Forest Labs' layout
FLUX_DIFFUSERS = "single_transformer_blocks.0.attn.to_q.weight"  # single files in diffusers' layout
LATENT_TOKENS_IN = 64  # 16 latent channels packed 2x2: text-to-image FLUX (Fill takes 384, Canny/Depth 128)


def transformer_in_channels(info: ModelInfo) -> int | None:
    """The transformer's input width: 64 for FLUX.1 text-to-image models (and Kontext)."""
    if info.is_file:
        for key in ("img_in.weight", "x_embedder.weight"):
            shape = info.shape(key)
            if shape is not None and len(shape) == 2:
                return shape[1]
        return None
    return info.config("transformer").get("in_channels")


def is_flux_file(info: ModelInfo) -> bool:
    return info.is_file and (info.has(FLUX_ORIGINAL) or info.has(FLUX_DIFFUSERS))


class Flux(DiffusionTransformer):
    name = "flux"
    title = "FLUX.1"
    pipelines = {
        "restyle": "FluxImg2ImgPipeline",
        "restyle+controlnet": "FluxControlNetImg2ImgPipeline",
        "inpaint": "FluxInpaintPipeline",
    }
    controlnet_classes = ("FluxControlNetModel",)
    ip_adapter = IPAdapterDefaults(
        "XLabs-AI/flux-ip-adapter/ip_adapter.safetensors",
        "ip_adapter.safetensors (and openai/clip-vit-large-patch14 as {image_encoder})",
    )
    # diffusers' FLUX.1-dev settings; bf16 on CUDA (FLUX overflows in fp16); sides: the VAE's 8 x 2x2 packing
    defaults = Defaults(steps=28, guidance=3.5, strength=0.6, half=False, multiple=16, tile=1024, tile_overlap=256)
    checkpoint_configs = "black-forest-labs/FLUX.1-dev"
    packed_latents = True  # the pipeline packs 2x2 patches of the latent image into tokens
    lora_marker = "single_transformer_blocks"
    takes_negative_prompt = False  # guidance-distilled: one pass a step, unless --true-cfg asks for a second
    true_cfg_kinds = ("restyle", "inpaint")  # FluxImg2ImgPipeline, FluxInpaintPipeline (not the ControlNet ones)
    max_sequence_length = 512  # T5 tokens at most, as FLUX.1-dev was trained (fewer if the T5 tokenizer says so)

    # --- recognition and cross-frame attention

    def recognise(self, info: ModelInfo) -> bool:
        channels = transformer_in_channels(info)
        if info.is_file:
            return is_flux_file(info) and channels == LATENT_TOKENS_IN
        return info.class_name in FLUX_PIPELINES and channels in (LATENT_TOKENS_IN, None)

    def cross_frame_processor(self) -> type[DiTCrossFrameProcessor]:
        from v2v.diffusion.dit_attention import FluxCrossFrameProcessor

        return FluxCrossFrameProcessor

    def gets_cross_frame(self, layer: str) -> bool:
        return "transformer_blocks." in layer  # the double-stream and the single-stream blocks

    # --- controls and adapters

    def check_controlnet(self, controlnet: Any, pipe: Any, name: str, model: str) -> None:
        """A FLUX ControlNet must match the transformer's width, heads, text width and rotary axes."""
        keys = ("in_channels", "num_attention_heads", "attention_head_dim", "joint_attention_dim", "axes_dims_rope")
        ours = pipe.transformer.config
        for key in keys:
            theirs, mine = controlnet.config.get(key), ours.get(key)
            if isinstance(mine, (list, tuple)):  # JSON configs give lists, live ones may hold tuples
                theirs, mine = list(theirs or []), list(mine)
            if theirs != mine:
                raise ModelError(
                    f"ControlNet {name!r} does not fit base model {model!r}: {key} is {theirs} there and {mine} in "
                    f"the base transformer (pass a ControlNet made for this {self.title} model)"
                )

    def load_ip_adapter(self, pipe: Any, name: str | None, image_encoder: str | None, scale: float) -> None:
        """An XLabs FLUX IP-Adapter, or FLUX Redux when `name` is a `FluxPriorReduxPipeline` folder (e.g.
        black-forest-labs/FLUX.1-Redux-dev): its SigLIP image tokens are appended to the prompt's T5 tokens."""
        if name and (redux := _redux_folder(name)) is not None:
            pipe.v2v_redux = (load_redux(redux, pipe, name), scale)
            return
        super().load_ip_adapter(pipe, name, image_encoder, scale)

    def ip_adapter_embeds(self, pipe: Any, reference: Any, device: torch.device, guided: bool) -> list[Any]:
        redux = getattr(pipe, "v2v_redux", None)
        if redux is None:
            return list(pipe.prepare_ip_adapter_image_embeds(reference, None, device, 1))
        import torch

        prior, scale = redux
        prior.to(device)  # loaded beside the pipeline in CPU memory; the prior runs once, on the device
        with torch.inference_mode():
            tokens = prior.image_embedder(prior.encode_image(reference, device, 1)).image_embeds
        return [tokens[:, :0] if scale == 0 else tokens * scale]  # (1, N, text width); no tokens at scale 0

    def text_width(self, pipe: Any) -> int | None:
        return pipe.transformer.config.joint_attention_dim  # what a FLUX IP-Adapter's k/v projections take

    # --- per batch

    def guided(self, pipe: Any, guidance: float, image_guidance: float | None) -> bool:
        return False  # guidance-distilled: the guidance is an input of the transformer, one pass per step

    def call_arguments(self, pipe: Any, batch: Batch) -> dict[str, Any]:
        arguments = super().call_arguments(pipe, batch)
        if batch.control_images:
            single = len(batch.control_images) == 1
            # FLUX's ControlNet pipelines hand tensors to the VAE as they are, so give them in the VAE's [-1, 1], as
            # the pipelines' own preprocessing of a PIL or NumPy control image would
            maps = [image * 2 - 1 for image in batch.control_images]
            arguments["control_image"] = maps[0] if single else maps
            arguments["controlnet_conditioning_scale"] = batch.control_scales[0] if single else batch.control_scales
            modes = control_modes(pipe, batch)
            if modes is not None:
                arguments["control_mode"] = modes
        if batch.ip_adapter_embeds is not None and getattr(pipe, "v2v_redux", None) is not None:
            # the pipeline gives the negative pass the prompt's text ids, so its tokens must be as many: the
            # reference's follow the negative prompt's too, and true CFG then guides on the text alone
            for name in ("prompt_embeds", "negative_prompt_embeds"):
                if name in arguments:
                    arguments[name] = redux_tokens(arguments[name], batch)
        elif batch.ip_adapter_embeds is not None:
            arguments["ip_adapter_image_embeds"] = batch.ip_adapter_embeds
        if batch.masks is not None:  # inpaint kinds
            arguments["mask_image"] = batch.masks
        return arguments


def _redux_folder(name: str) -> Any:
    """The local folder of `name` when it is a FluxPriorReduxPipeline folder, else None."""
    import json

    from v2v.diffusion.models import resolve_path

    path = resolve_path(name, "IP-Adapter or Redux model")
    index = path / "model_index.json"
    if not (path.is_dir() and index.exists()):
        return None
    return path if json.loads(index.read_text()).get("_class_name") == "FluxPriorReduxPipeline" else None


def load_redux(path: Any, pipe: Any, name: str) -> Any:
    """The Redux prior's image encoder and embedder (no text encoders: the base pipeline encodes the prompt).
    ModelError when its tokens are not as wide as the transformer's text."""
    from diffusers import FluxPriorReduxPipeline

    from v2v.diffusion.models import dtype_argument, first_line

    try:
        prior = FluxPriorReduxPipeline.from_pretrained(str(path), local_files_only=True, **dtype_argument(pipe.dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load FLUX Redux {name!r}: {first_line(exc)}") from exc
    width, ours = prior.image_embedder.config.txt_in_features, pipe.transformer.config.joint_attention_dim
    if width != ours:
        raise ModelError(f"FLUX Redux {name!r} makes tokens {width} wide, the base transformer reads {ours}")
    return prior.to(pipe.device)


def redux_tokens(text: torch.Tensor, batch: Batch) -> torch.Tensor:
    """A prompt's T5 tokens (B, N, width) followed by the Redux reference's image tokens, what
    `FluxPriorReduxPipeline` hands a FLUX pipeline as `prompt_embeds`."""
    import torch

    assert batch.ip_adapter_embeds is not None
    image = batch.ip_adapter_embeds[0].to(text.dtype).expand(text.shape[0], -1, -1)
    return torch.cat([text, image], dim=1)


def control_modes(pipe: Any, batch: Batch) -> list[int | None] | None:
    """The `control_mode` argument of the pipeline call: for one union ControlNet its mode (0 unless given) for
    each frame; for several ControlNets one mode each (None for the ones that are not union ones); None when
    there is one ControlNet and it is not a union one. UsageError for several ControlNets with a union one and
    more than one frame a call: diffusers' `FluxMultiControlNetModel` then gives the mode one row, not one a frame."""
    nets = list(getattr(pipe.controlnet, "nets", []))
    given = list(batch.control_modes) + [0] * len(nets or [pipe.controlnet])
    if not nets:
        return [given[0]] * batch.count if getattr(pipe.controlnet, "union", False) else None
    modes = [mode if getattr(net, "union", False) else None for mode, net in zip(given, nets, strict=False)]
    if batch.count > 1 and any(mode is not None for mode in modes):
        raise UsageError.naming("several FLUX ControlNets with a union one take one frame a call: use {batch_size} 1")
    return modes


register(Flux())
