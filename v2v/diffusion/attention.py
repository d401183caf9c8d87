"""Cross-frame attention: each frame's self-attention also attends to an anchor frame and the previous one.

This is the idea of Text2Video-Zero, Rerender-A-Video and FRESCO: in every self-attention layer of the
UNet, the queries of frame t look at its own keys/values *and* at those of an anchor keyframe and of frame
t-1, computed at the same layer and the same denoising step. Appearance (colours, textures) is then shared
along the clip instead of being re-invented per frame.

The `FrameBank` keeps, for every (layer, step), the keys/values of exactly two frames (the anchor and the
previous frame), so memory is bounded whatever the clip's length; with `max_tokens` it also keeps only an
evenly strided subset of each frame's tokens, which bounds it for large frames too. It stores contiguous copies,
never views, so a batch's whole key/value tensors are not kept alive by it. Frames of a batch are handled in
order inside one denoiser call, so a batch gives the same result as the same frames one at a time.

`bank_cap()` picks `max_tokens` from a memory budget: the stages give it a quarter of the memory available when
the first frame arrives (`bank_budget()`), and log the cap they chose (`--bank-tokens` overrides it).

`install_processors(model, replacements)` is how any family installs its processors for a block and puts back the
exact processors that were there (SDPA, IP-Adapter, ...) when the block ends; `cross_frame_attention(unet, bank)`
does it for a UNet's self-attention layers (`attn1`), with `CrossFrameAttnProcessor`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

KeyValue = tuple[torch.Tensor, torch.Tensor]


class FrameBank:
    """Keys/values of the anchor frame and the previous frame, per self-attention layer and step.

    Call `begin(anchors)` before each pipeline call with one flag per frame of the batch (True: this frame
    becomes the anchor). `reset()` forgets everything (a new clip, a scene cut).
    """

    def __init__(self, max_tokens: int | None = None) -> None:
        self.max_tokens = max_tokens
        self.tile = 0  # the tile of a tiled frame being denoised (`tiles.py`): each tile has its own slots
        self.anchor: dict[tuple[str, int], KeyValue] = {}
        self.previous: dict[tuple[str, int], KeyValue] = {}
        self.anchors: list[bool] = []
        self._calls: dict[str, int] = {}

    def begin(self, anchors: Sequence[bool]) -> None:
        self.anchors = list(anchors)
        self._calls.clear()

    def reset(self) -> None:
        self.anchor.clear()
        self.previous.clear()

    def next_step(self, layer: str) -> int:
        """The denoising step this layer is at: the UNet calls each layer once per step."""
        key = self._in_tile((layer, 0))[0]
        step = self._calls.get(key, 0)
        self._calls[key] = step + 1
        return step

    def _in_tile(self, slot: tuple[str, int]) -> tuple[str, int]:
        """The slot (layer, step) of the tile being denoised: tile 0's is the slot itself."""
        return slot if not self.tile else (f"{slot[0]}@tile{self.tile}", slot[1])

    def _bounded(self, key: torch.Tensor, value: torch.Tensor) -> KeyValue:
        """Copies (contiguous, owning their memory) of `key`/`value`, strided to at most `max_tokens` tokens."""
        stride = bank_stride(key.shape[-2], self.max_tokens)
        if stride > 1:
            key, value = key[..., ::stride, :], value[..., ::stride, :]
        return key.clone(memory_format=torch.contiguous_format), value.clone(memory_format=torch.contiguous_format)

    def nbytes(self) -> int:
        """Bytes held by the bank now."""
        stored = {id(t): t for pair in (*self.anchor.values(), *self.previous.values()) for t in pair}
        return sum(t.numel() * t.element_size() for t in stored.values())

    def recall(self, slot: tuple[str, int], index: int, frames: int) -> list[KeyValue] | None:
        """What frame `index` of a batch of `frames` attends to besides itself at `slot` (layer, step): the
        anchor's and the previous frame's keys/values; None when the frame is a fresh anchor (the first frame,
        a scene cut), which attends to itself only."""
        anchors = self.anchors if len(self.anchors) == frames else [False] * frames
        anchor, previous = self.anchor.get(self._in_tile(slot)), self.previous.get(self._in_tile(slot))
        if anchors[index] or anchor is None or previous is None:
            return None
        return [anchor] if previous is anchor else [anchor, previous]

    def remember(self, slot: tuple[str, int], fresh: bool, key: torch.Tensor, value: torch.Tensor) -> None:
        """Keep a frame's keys/values (..., N, d) at `slot` as the previous frame, and as the anchor if `fresh`."""
        stored = self._bounded(key, value)
        if fresh:
            self.anchor[self._in_tile(slot)] = stored
        self.previous[self._in_tile(slot)] = stored

    def attend(
        self,
        layer: str,
        step: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        keep: slice | None = None,
    ) -> torch.Tensor:
        """Attention for the frames of one batch, in order, each also over the anchor and previous frame.

        query/key/value: (G, B, heads, N, d), where G is 2 with classifier-free guidance (unconditional
        half first) and B the frames of the batch. Returns (G, B, heads, N, d). `keep` is the range of the N
        tokens that the bank stores and later frames see (joint attention: the image tokens only, so text tokens
        are never duplicated); None: all of them.
        """
        frames = key.shape[1]
        out = []
        slot = (layer, step)
        kept = keep or slice(None)
        for i in range(frames):
            memory = self.recall(slot, i, frames)
            keys = [key[:, i], *(bank_key for bank_key, _ in memory or [])]
            values = [value[:, i], *(bank_value for _, bank_value in memory or [])]
            out.append(F.scaled_dot_product_attention(query[:, i], torch.cat(keys, -2), torch.cat(values, -2)))
            self.remember(slot, memory is None, key[:, i, ..., kept, :], value[:, i, ..., kept, :])
        return torch.stack(out, 1)


class CrossFrameAttnProcessor:
    """A diffusers attention processor for self-attention layers that reads and fills a `FrameBank`."""

    def __init__(self, bank: FrameBank, layer: str) -> None:
        self.bank = bank
        self.layer = layer

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("CrossFrameAttnProcessor is for self-attention layers without masks")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        rows, tokens, _ = hidden_states.shape
        frames = len(self.bank.anchors) or rows
        groups = rows // frames  # 2 with classifier-free guidance

        def split(x: torch.Tensor) -> torch.Tensor:  # (G*B, N, heads*d) -> (G, B, heads, N, d)
            return x.view(groups, frames, tokens, attn.heads, -1).permute(0, 1, 3, 2, 4)

        query, key, value = (
            split(attn.to_q(hidden_states)),
            split(attn.to_k(hidden_states)),
            split(attn.to_v(hidden_states)),
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = self.bank.attend(self.layer, self.bank.next_step(self.layer), query, key, value)
        hidden_states = out.permute(0, 1, 3, 2, 4).reshape(rows, tokens, -1).to(query.dtype)

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if spatial:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def self_attention_layers(unet: Any) -> list[str]:
    """Names (as in `unet.attn_processors`) of the UNet's self-attention layers."""
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


@contextlib.contextmanager
def install_processors(model: Any, replacements: Mapping[str, Any]) -> Iterator[None]:
    """Set the processors of `replacements` (layer name as in `model.attn_processors` -> processor) for the
    block, keep every other layer's processor object, then put back the very objects that were there."""
    original = dict(model.attn_processors)
    unknown = set(replacements) - set(original)
    if unknown:
        raise ValueError(f"no attention layers {sorted(unknown)[:3]} in {type(model).__name__}")
    model.set_attn_processor({name: replacements.get(name, processor) for name, processor in original.items()})
    try:
        yield
    finally:
        model.set_attn_processor(original)


def cross_frame_attention(unet: Any, bank: FrameBank) -> contextlib.AbstractContextManager[None]:
    """Install `CrossFrameAttnProcessor` on the UNet's self-attention layers for the block, then put back
    the very processor objects that were there before."""
    return install_processors(unet, {name: CrossFrameAttnProcessor(bank, name) for name in self_attention_layers(unet)})


# --- the bank's memory ------------------------------------------------------------------------------------

BANK_MEMORY_FRACTION = 0.25  # of the memory available when the first frame arrives


def bank_stride(tokens: int, max_tokens: int | None) -> int:
    """The stride that keeps at most `max_tokens` of `tokens` (1: all of them)."""
    return 1 if max_tokens is None or tokens <= max_tokens else -(-tokens // max_tokens)


def bank_bytes(shapes: Sequence[tuple[int, int]], steps: int, groups: int, element: int, max_tokens: int | None) -> int:
    """Bytes of a full bank: keys and values of 2 frames (anchor, previous) for every layer in `shapes`
    ((tokens, key width) each) and step, for `groups` guidance copies, `element` bytes a number."""
    per_step = sum(-(-tokens // bank_stride(tokens, max_tokens)) * width for tokens, width in shapes)
    return 2 * 2 * steps * groups * element * per_step


def bank_cap(shapes: Sequence[tuple[int, int]], steps: int, groups: int, element: int, budget: int) -> int | None:
    """The largest `max_tokens` whose bank fits in `budget` bytes; None when the whole bank fits."""
    if not shapes or bank_bytes(shapes, steps, groups, element, None) <= budget:
        return None
    low, high = 1, max(tokens for tokens, _ in shapes)
    while low < high:  # the bytes grow with the cap: find the largest cap that fits
        middle = (low + high + 1) // 2
        if bank_bytes(shapes, steps, groups, element, middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def bank_budget(device: torch.device | str) -> int:
    """BANK_MEMORY_FRACTION of the memory available now on `device` (free CUDA memory; the system's available
    RAM otherwise), in bytes."""
    from v2v.devices import available_memory

    return int(available_memory(device) * BANK_MEMORY_FRACTION)
