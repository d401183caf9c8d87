"""A tiny random SAM 2 video model built from config and saved with `save_pretrained` in the layout of a real
download (`facebook/sam2.1-hiera-tiny`: the model, its processor), for tests on machines without weights.

The shapes are SAM 2's, scaled down together: a 64-pixel input by default (the real one is 1024), a four-stage Hiera
of width 8 with one or two blocks per stage, a 4x4 grid of image tokens for the prompt encoder and the memory
attention (64/16), and 128-wide prompt, mask-decoder and memory layers (SAM 2 splits each object pointer into tokens
as wide as its 64-channel memory features, a width transformers fixes, so they must be wider). The memory bank keeps
SAM 2's 7 frames and 16 object pointers.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 64  # input side (pixels)


def build_tiny_sam2(folder: Path, size: int = SIZE, seed: int = 0) -> Path:
    """Write the tiny model (input `size` pixels square, a multiple of 64) and its processor to `folder`; returns it."""
    import torch
    from transformers import (
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
        Sam2VisionConfig,
    )
    from transformers.models.sam2_video.configuration_sam2_video import (
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
    )

    width = 128  # SAM 2 splits its object pointers into tokens as wide as the (64-channel) memory: it must be wider
    backbone = Sam2HieraDetConfig(hidden_size=8, image_size=[size, size], blocks_per_stage=[1, 1, 2, 1],
                                  embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                                  window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
                                  window_positional_embedding_background_size=[2, 2])
    grid = size // 4
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                              backbone_feature_sizes=[[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]],
                              fpn_hidden_size=width)
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=width, image_size=size, patch_size=16,
                                                           mask_input_channels=4),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=width, mlp_dim=32, num_attention_heads=2,
                                                       iou_head_hidden_dim=16),
        image_size=size, memory_attention_hidden_size=width, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32, memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=width, mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=32)
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    model.save_pretrained(folder)
    side = {"height": size, "width": size}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=side, mask_size={"height": size // 4, "width": size // 4}),
        video_processor=Sam2VideoVideoProcessor(size=side), target_size=size)
    processor.save_pretrained(folder)
    return Path(folder)
