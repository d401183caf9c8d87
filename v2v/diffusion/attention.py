"""Cross-frame attention: each frame's self-attention also attends to an anchor frame and the previous one.

This is the idea of Text2Video-Zero, Rerender-A-Video and FRESCO: in every self-attention layer of the
UNet, the queries of frame t look at its own keys/values *and* at those of an anchor keyframe and of frame
t-1, computed at the same layer and the same denoising step. Appearance (colours, textures) is then shared
along the clip instead of being re-invented per frame.

The `FrameBank` keeps, for every (layer, step), the keys/values of exactly two frames (the anchor and the
previous frame), so memory is bounded whatever the clip's length; with `max_tokens` it also keeps only an
evenly strided subset of each frame's tokens, which bounds it for large frames too. Frames of a batch are
handled in order inside one UNet call, so a batch gives the same result as the same frames one at a time.

`cross_frame_attention(unet, bank)` installs the processor on the self-attention layers (`attn1`) and puts
back the exact processors that were there (SDPA, IP-Adapter, ...) when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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
        step = self._calls.get(layer, 0)
        self._calls[layer] = step + 1
        return step

    def _bounded(self, key: torch.Tensor, value: torch.Tensor) -> KeyValue:
        tokens = key.shape[-2]
        if self.max_tokens is None or tokens <= self.max_tokens:
            return key, value
        stride = -(-tokens // self.max_tokens)
        return key[..., ::stride, :].contiguous(), value[..., ::stride, :].contiguous()

    def attend(
        self, layer: str, step: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """Attention for the frames of one batch, in order, each also over the anchor and previous frame.

        query/key/value: (G, B, heads, N, d), where G is 2 with classifier-free guidance (unconditional
        half first) and B the frames of the batch. Returns (G, B, heads, N, d).
        """
        frames = key.shape[1]
        anchors = self.anchors if len(self.anchors) == frames else [False] * frames
        out = []
        slot = (layer, step)
        for i in range(frames):
            keys, values = [key[:, i]], [value[:, i]]
            anchor, previous = self.anchor.get(slot), self.previous.get(slot)
            fresh = anchors[i] or anchor is None  # a new anchor (first frame, scene cut) attends to itself only
            if not fresh:
                for bank_key, bank_value in (anchor, previous) if previous is not anchor else (anchor,):
                    keys.append(bank_key)
                    values.append(bank_value)
            out.append(F.scaled_dot_product_attention(query[:, i], torch.cat(keys, -2), torch.cat(values, -2)))
            stored = self._bounded(key[:, i], value[:, i])
            if fresh:
                self.anchor[slot] = stored
            self.previous[slot] = stored
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
def cross_frame_attention(unet: Any, bank: FrameBank) -> Iterator[None]:
    """Install `CrossFrameAttnProcessor` on the UNet's self-attention layers for the block, then put back
    the very processor objects that were there before."""
    original = dict(unet.attn_processors)
    installed = {
        name: CrossFrameAttnProcessor(bank, name) if name.endswith("attn1.processor") else processor
        for name, processor in original.items()
    }
    unet.set_attn_processor(installed)
    try:
        yield
    finally:
        unet.set_attn_processor(original)
