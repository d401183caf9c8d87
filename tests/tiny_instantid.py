"""Tiny random InstantID parts for the tiny SDXL of `tiny_diffusion`, in the layouts users download:

- `write_tiny_instantid(folder, sdxl)`: `folder/ControlNetModel` (IdentityNet: a ControlNet made from the tiny SDXL
  UNet, its zero convolutions given weights so it steers) and `folder/ip-adapter.bin` (InstantID's face adapter:
  `image_proj`, a Resampler in the original ip_adapter layout taking 512-number embeddings to 16 tokens, and
  `ip_adapter`, to_k_ip/to_v_ip per cross-attention layer numbered as the original's ModuleList numbers them);
- `write_tiny_face_encoder(path)`: an ONNX "ArcFace" (1, 3, 112, 112) -> (1, 512): average pooling to 8x8, then one
  random linear layer, written with onnx.helper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tiny_diffusion import attention_width

EMBEDDING = 512
TOKENS = 16


def _resampler(embedding: int, hidden: int, output: int, depth: int = 4) -> dict[str, torch.Tensor]:
    """A Resampler state dict in ip_adapter.resampler's key layout (heads of 64: one head at hidden 64; depth 4 as
    InstantID's, which diffusers' loader assumes)."""
    generator = torch.Generator().manual_seed(5)

    def rand(*shape: int, std: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    weights = {
        "latents": rand(1, TOKENS, hidden, std=1.0),
        "proj_in.weight": rand(hidden, embedding, std=0.05), "proj_in.bias": torch.zeros(hidden),
        "proj_out.weight": rand(output, hidden), "proj_out.bias": torch.zeros(output),
        "norm_out.weight": torch.ones(output), "norm_out.bias": torch.zeros(output),
    }  # fmt: skip
    for layer in range(depth):
        attention, feed = f"layers.{layer}.0.", f"layers.{layer}.1."
        weights.update({
            attention + "norm1.weight": torch.ones(hidden), attention + "norm1.bias": torch.zeros(hidden),
            attention + "norm2.weight": torch.ones(hidden), attention + "norm2.bias": torch.zeros(hidden),
            attention + "to_q.weight": rand(hidden, hidden), attention + "to_kv.weight": rand(2 * hidden, hidden),
            attention + "to_out.weight": rand(hidden, hidden),
            feed + "0.weight": torch.ones(hidden), feed + "0.bias": torch.zeros(hidden),
            feed + "1.weight": rand(4 * hidden, hidden), feed + "3.weight": rand(hidden, 4 * hidden),
        })  # fmt: skip
    return weights


def write_tiny_instantid(folder: Path, sdxl: Path) -> Path:
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(11)
    unet = UNet2DConditionModel.from_pretrained(str(sdxl / "unet"))
    identitynet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    for conv in [*identitynet.controlnet_down_blocks, identitynet.controlnet_mid_block,
                 identitynet.controlnet_cond_embedding.conv_out]:  # fmt: skip
        torch.nn.init.normal_(conv.weight, std=0.2)
    identitynet.save_pretrained(str(folder / "ControlNetModel"))
    width = unet.config.cross_attention_dim
    adapter: dict[str, torch.Tensor] = {}
    for number, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            continue
        hidden = attention_width(unet, name)
        adapter[f"{number}.to_k_ip.weight"] = torch.randn(hidden, width) * 0.1
        adapter[f"{number}.to_v_ip.weight"] = torch.randn(hidden, width) * 0.1
    torch.save({"image_proj": _resampler(EMBEDDING, 64, width), "ip_adapter": adapter}, str(folder / "ip-adapter.bin"))
    return folder


def write_tiny_face_encoder(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(3).normal(0, 1, (3 * 8 * 8, EMBEDDING)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["embedding"]),
        ],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, EMBEDDING])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
