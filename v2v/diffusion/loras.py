"""Stacked LoRAs: `--lora PATH[:WEIGHT]`, repeatable (a recipe's `lora = ["a.safetensors:0.8", "b"]`).

Each LoRA becomes a diffusers adapter with its weight (`load_lora_weights(adapter_name=...)`, then
`set_adapters(names, weights)`), and the stack is fused into the base weights once (`fuse_lora`, then the adapters
are unloaded), so a frame costs what it costs without LoRAs.

A LoRA made for another base is refused in one line naming both, before anything is loaded where its file says
enough: each layer it names (diffusers' layout, `unet.…lora_A.weight`) must exist in the pipeline with the LoRA's
input and output widths. Other layouts (kohya's) are converted by diffusers, and refused when no layer of the
pipeline took them. Which family a LoRA is for is each family's to say (`Family.claims_lora`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v2v.errors import ModelError, ParameterError, require

if TYPE_CHECKING:
    from v2v.diffusion.registry import Family

log = logging.getLogger(__name__)

# suffixes of a LoRA's down (input side) and up (output side) matrices, diffusers/peft and older diffusers layouts
DOWN = (".lora_A.weight", ".lora.down.weight")
UP = (".lora_B.weight", ".lora.up.weight")


@dataclasses.dataclass(frozen=True)
class Lora:
    """One LoRA of a stack: its name (a file, a folder or a hub id) and its weight."""

    name: str
    weight: float = 1.0


def parse_lora(text: str) -> Lora:
    """`PATH[:WEIGHT]` as a `Lora`; ParameterError (one line) when WEIGHT is not a number. A path that exists is
    taken whole, and a colon followed by a path (`C:\\loras\\x.safetensors`) is part of the path."""
    head, colon, tail = text.rpartition(":")
    if not colon or not head or os.path.exists(text) or "/" in tail or "\\" in tail:
        return Lora(text)
    try:
        weight = float(tail)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise ParameterError("lora", f"weight {tail!r} in {text!r} is not a number (PATH[:WEIGHT], e.g. "
                                     "style.safetensors:0.8)")  # fmt: skip
    return Lora(head, weight)


def parse_loras(texts: str | Sequence[str] | None) -> list[Lora]:
    """A recipe's or the command line's LoRAs (one string, or a list) as `Lora`s."""
    if not texts:
        return []
    return [parse_lora(str(text)) for text in ([texts] if isinstance(texts, str) else texts)]


def load_loras(pipe: Any, family: Family, loras: Sequence[Lora], model: str) -> None:
    """Load every LoRA as an adapter, set their weights and fuse them into `pipe` once. ModelError (one line) for a
    LoRA that cannot be read or was made for another base."""
    if not loras:
        return
    require("peft", "diffusion")
    from v2v.diffusion.models import first_line, resolve_path

    names = []
    for number, lora in enumerate(loras):
        path = resolve_path(lora.name, "LoRA")
        shapes = lora_shapes(path)
        check_fits(pipe, family, shapes, lora.name, model)
        adapter = f"v2v-lora-{number}"
        try:
            with quiet_adapters():
                if path.is_file():
                    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
                else:
                    pipe.load_lora_weights(str(path), adapter_name=adapter, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"cannot load LoRA {lora.name!r}: {first_line(exc)}") from exc
        if not any(adapter in taken for taken in pipe.get_list_adapters().values()):  # diffusers only warned
            raise ModelError(_another_base(family, shapes, lora.name, model, "none of its layers is in the base"))
        names.append(adapter)
    pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()  # the fused weights stay; the adapters' layers go
    log.info("LoRAs fused into the base: %s", ", ".join(f"{lora.name} x {lora.weight:g}" for lora in loras))


@contextlib.contextmanager
def quiet_adapters() -> Iterator[None]:
    """Without diffusers' "no LoRA keys for the text encoder" lines (a LoRA for the denoiser alone is the usual
    case; one that fits nothing is refused after) and peft's warning that a model holds several adapters (a stack)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def lora_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a LoRA file, or of the one weight file of a LoRA folder ({} when there is
    not exactly one), read without loading the weights."""
    from v2v.diffusion.checkpoints import read_tensor_shapes

    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
        if len(found) != 1:
            return {}
        path = found[0]
    try:
        return read_tensor_shapes(path)
    except Exception:  # an unreadable file: diffusers' loader says why
        return {}


def check_fits(pipe: Any, family: Family, shapes: Mapping[str, tuple[int, ...]], name: str, model: str) -> None:
    """ModelError (one line, naming the LoRA's family and the base's) when a layer the LoRA names in diffusers'
    layout is missing from `pipe` or has other widths."""
    for key, shape in sorted(shapes.items()):
        suffix = next((s for s in (*DOWN, *UP) if key.endswith(s)), None)
        if suffix is None or "." not in key:
            continue
        component, layer = key[: -len(suffix)].split(".", 1)
        owner = getattr(pipe, component, None)
        if owner is None or not hasattr(owner, "get_submodule"):
            continue  # not diffusers' layout (e.g. kohya's `lora_unet_…`): diffusers converts it
        try:
            module = owner.get_submodule(layer)
        except AttributeError:
            raise ModelError(_another_base(family, shapes, name, model, f"the base has no layer {component}.{layer}"
                                           )) from None
        down = suffix in DOWN
        width = getattr(module, "in_features" if down else "out_features", None)
        width = getattr(module, "in_channels" if down else "out_channels", width)
        theirs = shape[1] if down else shape[0]
        if width is not None and len(shape) >= 2 and theirs != width:
            side = "input" if down else "output"
            why = f"its layer {component}.{layer} has {theirs} {side}s, the base's {width}"
            raise ModelError(_another_base(family, shapes, name, model, why))


def _another_base(family: Family, shapes: Mapping[str, tuple[int, ...]], name: str, model: str, why: str) -> str:
    from v2v.diffusion.registry import all_families

    owners = [other.title for other in all_families() if other.claims_lora(shapes)]
    made_for = " or ".join(dict.fromkeys(owners)) if owners else "another model"
    return (f"LoRA {name!r} was made for {made_for}, not for base model {model!r} ({family.title}): {why}; pass a "
            f"LoRA made for {family.title}")  # fmt: skip
