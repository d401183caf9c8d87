"""Cross-frame attention for diffusion transformers (DiTs) with joint text-image attention.

FLUX, SD3 and Qwen-Image attend over one sequence of text tokens and image tokens. Here the current
frame's *image* queries also see the image keys/values of the shot's anchor frame and of the previous
frame, taken at the same block, the same denoising step and the same pass (a true-CFG pipeline calls the
transformer twice per step, once per prompt). Keys are banked *after* the family's normalisation and
rotary embedding, so a token of the anchor meets the token at the same place of the current frame at
relative position zero. Text queries attend to the frame's own tokens only, and text keys are never
banked: nothing of the prompt is duplicated.

The bank is `attention.FrameBank` (anchor + previous frame, an optional token cap, restarted at scene
cuts). The denoising step is not counted per layer call as in a UNet: a forward pre-hook on the
transformer reads the scheduler's step index on every call (host state, no device read), so the count stays
right whatever order the blocks run in and however often the pipeline calls the transformer per step.

The processors for FLUX, SD3 and Qwen-Image are here; a DiT family names its own (`DiTFamily`: which processor
class, on which attention layers), so a new family may bring a new processor without an entry here.
`dit_cross_frame_attention(transformer, bank, family)` installs the family's processors for a block and puts back
the exact processor objects that were there (IP-Adapter ones included) when it ends, also on error.
Frames of a batch are handled in order, so a batch gives the same result as the frames one at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from v2v.diffusion.attention import FrameBank, install_processors


@dataclass
class TransformerCall:
    """Where the transformer is: denoising step, pass within the step, and text tokens of this call."""

    step: int = 0
    passes: int = 0
    text_tokens: int = 0


def _watch_calls(transformer: Any, scheduler: Any, bank: FrameBank, call: TransformerCall) -> Any:
    """A forward pre-hook that updates `call` on every transformer call; returns the hook's handle.

    The clock is the scheduler's step index (host state: reading the timestep tensor would wait for the device on
    every call). A call at a step index not seen since `bank.begin` is a new step; another call at the same index
    is the next pass of that step (true CFG's negative prompt). Without a scheduler every call is a step."""

    def before(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        moment = scheduler.step_index if scheduler is not None else bank.next_step("dit-unclocked")
        call.passes = bank.next_step(f"dit-call@{moment}")
        if call.passes == 0:
            call.step = bank.next_step("dit-steps")
        text = kwargs.get("encoder_hidden_states")
        if text is None and len(args) > 1:
            text = args[1]
        call.text_tokens = int(text.shape[1]) if isinstance(text, torch.Tensor) and text.ndim == 3 else 0

    return transformer.register_forward_pre_hook(before, with_kwargs=True)


def joint_attention(
    bank: FrameBank,
    slot: tuple[str, int],
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    image: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    text_first: bool,
    text_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint attention of (text, image) queries/keys/values, image queries also over the bank.

    Each tensor is (rows, heads, N, d) in SDPA's layout, with rows = G x B (G = 2 when a batch holds the
    unconditional half first, B = the frames, `len(bank.anchors)`). `text_mask` (rows, N_text), True
    where a text token counts, as in Qwen-Image. Returns the (text, image) outputs, each (rows, heads, N, d).
    A frame with nothing banked (a fresh anchor) gets exactly the family's own joint attention.
    """
    q_txt, k_txt, v_txt = text
    q_img, k_img, v_img = image
    rows, n_txt = q_img.shape[0], q_txt.shape[2]
    frames = len(bank.anchors) or rows
    groups = rows // frames

    def joint(a: torch.Tensor, b: torch.Tensor, dim: int = 2) -> torch.Tensor:
        return torch.cat([a, b] if text_first else [b, a], dim=dim)

    out_txt: list[torch.Tensor] = [torch.empty(0)] * rows
    out_img: list[torch.Tensor] = [torch.empty(0)] * rows
    for i in range(frames):
        picked = [g * frames + i for g in range(groups)]
        qt, kt, vt, qi, ki, vi = (x[picked] for x in (q_txt, k_txt, v_txt, q_img, k_img, v_img))
        mask = None
        if text_mask is not None:
            own = torch.ones(len(picked), ki.shape[2], dtype=torch.bool, device=ki.device)
            mask = joint(text_mask[picked].bool(), own, dim=1)[:, None, None, :]
        memory = bank.recall(slot, i, frames)
        keys, values = joint(kt, ki), joint(vt, vi)
        if memory is None:
            both = F.scaled_dot_product_attention(joint(qt, qi), keys, values, attn_mask=mask)
            n_img = qi.shape[2]
            t, im = (both[:, :, :n_txt], both[:, :, n_txt:]) if text_first else (both[:, :, n_img:], both[:, :, :n_img])
        else:
            t = F.scaled_dot_product_attention(qt, keys, values, attn_mask=mask) if n_txt else qt
            extra_k = [bank_key for bank_key, _ in memory]
            extra_v = [bank_value for _, bank_value in memory]
            image_mask = None
            if mask is not None:
                seen = sum(k.shape[2] for k in extra_k)
                image_mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], seen)], dim=-1)
            im = F.scaled_dot_product_attention(
                qi, torch.cat([keys, *extra_k], 2), torch.cat([values, *extra_v], 2), attn_mask=image_mask
            )
        bank.remember(slot, memory is None, ki, vi)
        for g, row in enumerate(picked):
            out_txt[row], out_img[row] = t[g], im[g]
    return torch.stack(out_txt), torch.stack(out_img)


class DiTCrossFrameProcessor:
    """The base of the cross-frame processors: the bank, the call clock, the layer name and the processor this one
    stands in for (its IP-Adapter weights are used when it has them). A subclass's `__call__` computes the layer's
    attention as diffusers' processor does, with `joint_attention(self.bank, self.slot, ...)` at its core."""

    def __init__(self, bank: FrameBank, call: TransformerCall, layer: str, original: Any) -> None:
        self.bank = bank
        self.call = call
        self.layer = layer
        self.original = original

    @property
    def slot(self) -> tuple[str, int]:
        return (f"{self.layer}#{self.call.passes}", self.call.step)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, N, heads, d)."""
    return x.unflatten(-1, (-1, head_dim))


class FluxCrossFrameProcessor(DiTCrossFrameProcessor):
    """For FLUX's `FluxAttention` (double-stream blocks, with the text stream as `encoder_hidden_states`, and
    single-stream blocks, where the text tokens lead the sequence). The same projections, RMS norms and
    rotary embedding as diffusers' `FluxAttnProcessor`; IP-Adapter attention as `FluxIPAdapterAttnProcessor`."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        ip_hidden_states: list[torch.Tensor] | None = None,
        ip_adapter_masks: torch.Tensor | None = None,
    ) -> Any:
        from diffusers.models.embeddings import apply_rotary_emb

        if attention_mask is not None:
            raise ValueError("cross-frame attention does not take an attention mask in FLUX blocks")
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key, value = (_heads(x, attn.head_dim) for x in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)
        ip_query = query
        double = encoder_hidden_states is not None
        if double:
            if getattr(attn, "fused_projections", False):
                e_query, e_key, e_value = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
            else:
                e_query = attn.add_q_proj(encoder_hidden_states)
                e_key = attn.add_k_proj(encoder_hidden_states)
                e_value = attn.add_v_proj(encoder_hidden_states)
            e_query, e_key, e_value = (_heads(x, attn.head_dim) for x in (e_query, e_key, e_value))
            e_query, e_key = attn.norm_added_q(e_query), attn.norm_added_k(e_key)
            query, key, value = (torch.cat(pair, dim=1) for pair in ((e_query, query), (e_key, key), (e_value, value)))
            n_txt = encoder_hidden_states.shape[1]
        else:
            n_txt = self.call.text_tokens
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, heads, N, d)
        out_txt, out_img = joint_attention(
            self.bank,
            self.slot,
            (q[:, :, :n_txt], k[:, :, :n_txt], v[:, :, :n_txt]),
            (q[:, :, n_txt:], k[:, :, n_txt:], v[:, :, n_txt:]),
            text_first=True,
        )
        out = torch.cat([out_txt, out_img], dim=2).transpose(1, 2).flatten(2, 3).to(query.dtype)
        if not double:
            return out
        text_out, image_out = out[:, :n_txt], out[:, n_txt:]
        image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
        text_out = attn.to_add_out(text_out.contiguous())
        if ip_hidden_states is None or not hasattr(self.original, "to_k_ip"):
            return image_out, text_out
        return image_out, text_out, self._ip_attention(attn, ip_query, ip_hidden_states)

    def _ip_attention(self, attn: Any, ip_query: torch.Tensor, ip_hidden_states: list[torch.Tensor]) -> torch.Tensor:
        """The IP-Adapter's image-prompt attention, as `FluxIPAdapterAttnProcessor` computes it."""
        ip = self.original
        batch = ip_query.shape[0]
        total = torch.zeros(batch, ip_query.shape[1], attn.heads * attn.head_dim, dtype=ip_query.dtype,
                            device=ip_query.device)  # fmt: skip
        for states, scale, to_k, to_v in zip(ip_hidden_states, ip.scale, ip.to_k_ip, ip.to_v_ip, strict=False):
            ip_key = to_k(states).view(batch, -1, attn.heads, attn.head_dim).transpose(1, 2)
            ip_value = to_v(states).view(batch, -1, attn.heads, attn.head_dim).transpose(1, 2)
            attended = F.scaled_dot_product_attention(ip_query.transpose(1, 2), ip_key, ip_value)
            total += scale * attended.transpose(1, 2).reshape(batch, -1, attn.heads * attn.head_dim).to(total.dtype)
        return total


class JointCrossFrameProcessor(DiTCrossFrameProcessor):
    """For SD3/3.5's joint blocks (`JointAttnProcessor2_0`: image tokens first, then text, no rotary) and
    SD3.5's image-only second attention (`AttnProcessor2_0` without a text stream)."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if attention_mask is not None:
            raise ValueError("cross-frame attention does not take an attention mask in SD3 blocks")
        batch, n_img = hidden_states.shape[:2]
        head_dim = attn.to_k.out_features // attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = (split(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        empty = query[:, :, :0]
        text = (empty, empty, empty)
        if encoder_hidden_states is not None:
            e_query, e_key, e_value = (
                split(f(encoder_hidden_states)) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            )
            if attn.norm_added_q is not None:
                e_query = attn.norm_added_q(e_query)
            if attn.norm_added_k is not None:
                e_key = attn.norm_added_k(e_key)
            text = (e_query, e_key, e_value)
        out_txt, out_img = joint_attention(self.bank, self.slot, text, (query, key, value), text_first=False)

        def merge(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        image_out = attn.to_out[1](attn.to_out[0](merge(out_img)))
        if encoder_hidden_states is None:
            return image_out
        text_out = merge(out_txt)
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return image_out, text_out


class QwenCrossFrameProcessor(DiTCrossFrameProcessor):
    """For Qwen-Image's double-stream blocks (`QwenDoubleStreamAttnProcessor2_0`: text first, separate rotary
    frequencies for the image and text streams, a text padding mask)."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("Qwen-Image blocks need a text stream and take no external attention mask")
        head_dim = attn.inner_dim // attn.heads
        q_img, k_img, v_img = (_heads(f(hidden_states), head_dim) for f in (attn.to_q, attn.to_k, attn.to_v))
        q_txt, k_txt, v_txt = (
            _heads(f(encoder_hidden_states), head_dim) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )
        if attn.norm_q is not None:
            q_img = attn.norm_q(q_img)
        if attn.norm_k is not None:
            k_img = attn.norm_k(k_img)
        if attn.norm_added_q is not None:
            q_txt = attn.norm_added_q(q_txt)
        if attn.norm_added_k is not None:
            k_txt = attn.norm_added_k(k_txt)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            q_img, k_img = (apply_rotary_emb_qwen(x, img_freqs, use_real=False) for x in (q_img, k_img))
            q_txt, k_txt = (apply_rotary_emb_qwen(x, txt_freqs, use_real=False) for x in (q_txt, k_txt))
        dtype = q_img.dtype
        out_txt, out_img = joint_attention(
            self.bank,
            self.slot,
            tuple(x.transpose(1, 2) for x in (q_txt, k_txt, v_txt)),  # type: ignore[arg-type]
            tuple(x.transpose(1, 2) for x in (q_img, k_img, v_img)),  # type: ignore[arg-type]
            text_first=True,
            text_mask=encoder_hidden_states_mask,
        )
        image_out = out_img.transpose(1, 2).flatten(2, 3).to(dtype)
        text_out = out_txt.transpose(1, 2).flatten(2, 3).to(dtype)
        image_out = attn.to_out[0](image_out.contiguous())
        if len(attn.to_out) > 1:
            image_out = attn.to_out[1](image_out)
        return image_out, attn.to_add_out(text_out.contiguous())


class DiTFamily(Protocol):
    """What a DiT family says about its cross-frame attention (`families.dit.DiffusionTransformer` does)."""

    def cross_frame_processor(self) -> type[DiTCrossFrameProcessor]:
        """The processor class that replaces the chosen layers' attention processors."""
        ...

    def gets_cross_frame(self, layer: str) -> bool:
        """Whether the attention layer `layer` (a key of `transformer.attn_processors`) gets cross-frame attention."""
        ...


def cross_frame_layers(transformer: Any, family: DiTFamily) -> list[str]:
    """Names (as in `transformer.attn_processors`) of the layers that get cross-frame attention."""
    return [name for name in transformer.attn_processors if family.gets_cross_frame(name)]


@contextlib.contextmanager
def dit_cross_frame_attention(
    transformer: Any, bank: FrameBank, family: DiTFamily, scheduler: Any = None
) -> Iterator[TransformerCall]:
    """Install the family's cross-frame processors on `transformer` for the block, clocked by `scheduler`'s step
    index (the pipeline's scheduler); afterwards (also on error) the very processor objects that were there before
    are back and the step hook is gone."""
    processor = family.cross_frame_processor()
    call = TransformerCall()
    replacements = {
        name: processor(bank, call, name, existing)
        for name, existing in transformer.attn_processors.items()
        if family.gets_cross_frame(name)
    }
    with install_processors(transformer, replacements):
        handle = _watch_calls(transformer, scheduler, bank, call)
        try:
            yield call
        finally:
            handle.remove()


def transformer_bank_shapes(transformer: Any, family: DiTFamily, image_tokens: int) -> list[tuple[int, int]]:
    """(tokens, key width) for each layer with cross-frame attention: every layer of a DiT banks all of a
    frame's `image_tokens` (see `Family.bank_shapes`)."""
    width = int(transformer.config.num_attention_heads * transformer.config.attention_head_dim)
    return [(image_tokens, width)] * len(cross_frame_layers(transformer, family))
