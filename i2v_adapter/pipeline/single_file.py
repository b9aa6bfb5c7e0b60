"""A single-file SD1.5 checkpoint (ldm keys, the form the WebUIs keep) as diffusers UNet, VAE and text encoder.

The layout is SD1.5's (``v1-inference.yaml``: four UNet levels, attention in the first three, a four-level
VAE, a CLIP text transformer). Widths and counts are read from the tensors, so fine-tunes and small test
models load alike and a file of another family fails on its shapes with the part named. What the tensors
cannot tell is SD1.5's: 8 UNet attention heads, CLIP heads 64 wide, quick-GELU, the VAE's scaling factor.
The tokenizer is not in the file: it comes from a folder, or else the hub cache (see ``hub_files``).
"""
from __future__ import annotations

import re

import torch

from ..weights.adapter import WeightsError
from ..weights.reading import read_file

_UNET = "model.diffusion_model."
_VAE = "first_stage_model."
_CLIP_HEAD_WIDTH = 64

SD15_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD15_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "scaling_factor": 0.18215,
}
SD15_TEXT_CONFIG = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}


def _shape(tensors: dict, key: str, part: str) -> torch.Size:
    if key not in tensors:
        raise WeightsError(f"not an SD1.5 single-file checkpoint: its {part} has no {key}")
    return tensors[key].shape


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({match[1] for key in keys if (match := regex.match(key))})


def unet_config(tensors: dict) -> dict:
    """SD1.5's UNet layout with the level widths and text width of this file."""
    # The first resblock of level i is input_blocks.{3i+1} (conv_in, two blocks, a downsampler per level).
    widths = tuple(_shape(tensors, f"{_UNET}input_blocks.{3 * level + 1}.0.out_layers.3.bias", "UNet")[0]
                   for level in range(4))
    text_width = _shape(tensors, f"{_UNET}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "UNet")[1]
    return {**SD15_UNET_CONFIG, "block_out_channels": widths, "cross_attention_dim": text_width}


def vae_config(tensors: dict) -> dict:
    levels = _count(tensors, rf"^{_VAE}encoder\.down\.(\d+)\.block\.")
    widths = tuple(_shape(tensors, f"{_VAE}encoder.down.{level}.block.0.conv1.bias", "VAE")[0]
                   for level in range(max(levels, 1)))
    return {
        **SD15_VAE_CONFIG,
        "block_out_channels": widths,
        "layers_per_block": _count(tensors, rf"^{_VAE}encoder\.down\.0\.block\.(\d+)\."),
        "latent_channels": _shape(tensors, f"{_VAE}post_quant_conv.weight", "VAE")[1],
        "down_block_types": ("DownEncoderBlock2D",) * len(widths),
        "up_block_types": ("UpDecoderBlock2D",) * len(widths),
    }


def text_config(clip_tensors: dict) -> dict:
    """CLIP text settings from converted (transformers-named) tensors, with or without ``text_model.``."""
    bare = {key.split("text_model.", 1)[-1]: tensor for key, tensor in clip_tensors.items()}
    vocab, width = _shape(bare, "embeddings.token_embedding.weight", "text encoder")
    return {
        **SD15_TEXT_CONFIG,
        "vocab_size": vocab, "hidden_size": width, "projection_dim": width,
        "num_attention_heads": max(1, width // _CLIP_HEAD_WIDTH),
        "max_position_embeddings": _shape(bare, "embeddings.position_embedding.weight", "text encoder")[0],
        "num_hidden_layers": _count(bare, r"^encoder\.layers\.(\d+)\."),
        "intermediate_size": _shape(bare, "encoder.layers.0.mlp.fc1.weight", "text encoder")[0],
    }


def _load_state(model: torch.nn.Module, state_dict: dict, what: str, ignore=("position_ids",)) -> None:
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(ignore)}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise WeightsError(f"the checkpoint's {what} does not fit SD1.5: missing {missing[:5]} ({len(missing)}), "
                           f"unexpected {unexpected[:5]} ({len(unexpected)})")


def fit_text_model_prefix(state_dict: dict, model: torch.nn.Module, prefix: str = "text_model.") -> dict:
    """Checkpoints name CLIP's weights with or without ``text_model.``; so do transformers versions."""
    wants_prefix = any(key.startswith(prefix) for key in model.state_dict())
    fitted = {}
    for key, value in state_dict.items():
        bare = key[len(prefix):] if key.startswith(prefix) else key
        fitted[prefix + bare if wants_prefix else bare] = value
    return fitted


def load_single_file(path: str, tokenizer_dir: str):
    """``(unet2d, vae, text_encoder, tokenizer)`` from one SD1.5 file and a CLIP tokenizer folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    checkpoint = read_file(path).tensors
    unet = UNet2DConditionModel(**unet_config(checkpoint))
    _load_state(unet, convert_ldm_unet_checkpoint(checkpoint, unet.config), "UNet")
    vae = AutoencoderKL(**vae_config(checkpoint))
    _load_state(vae, convert_ldm_vae_checkpoint(checkpoint, vae.config), "VAE")
    clip = convert_ldm_clip_checkpoint(checkpoint)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(clip)))
    _load_state(text_encoder, fit_text_model_prefix(clip, text_encoder), "text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    return unet, vae, text_encoder, tokenizer
