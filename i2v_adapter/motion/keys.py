"""Motion-module key names: the original AnimateDiff layout, diffusers' layout, and what else a file holds.

Original (``mm_sd_v15*.ckpt``, ``v3_sd15_mm.ckpt``, the motion part of the official ipplus UNet):
    down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight
    ...attention_blocks.N.pos_encoder.pe, ...norms.N, ...ff.net.0.proj, ...ff_norm, ...norm, ...proj_in/out
diffusers (``MotionAdapter``): no ``temporal_transformer.``; ``attn1/attn2``, ``norm1/norm2/norm3`` and one
``pos_embed.pe`` per transformer block (used before both attentions). Everything here is turned into the
original names, which our modules carry.
"""
from __future__ import annotations

import re

import torch

MOTION_KEY = re.compile(r"^(?P<level>down_blocks\.\d+|mid_block|up_blocks\.\d+)\.motion_modules\.(?P<index>\d+)\."
                        r"(?P<rest>.+)$")
# A whole diffusers UNet's own (spatial) tensors, as in the official ipplus file.
SPATIAL_UNET_KEY = re.compile(
    r"^(conv_in|conv_out|conv_norm_out|time_embedding|"
    r"down_blocks\.\d+\.(resnets|attentions|downsamplers)|mid_block\.(resnets|attentions)|"
    r"up_blocks\.\d+\.(resnets|attentions|upsamplers))\.")
IP_ADAPTER_PARTS = (".to_k_ip.", ".to_v_ip.")
ADAPTER_PARTS = (".to_q_ff.", ".to_out_ff.")
# HotShot-XL names its temporal layers ``temporal_attentions`` (no ``temporal_transformer`` level) and its
# position tables ``positional_encoding``; LoRA files carry lora in their names.
HOTSHOT_PART = ".temporal_attentions."
_HOTSHOT_KEY = re.compile(r"^(?P<level>down_blocks\.\d+|mid_block|up_blocks\.\d+)\.temporal_attentions\.(?P<index>\d+)\."
                          r"(?P<rest>.+)$")
LORA_PART = "lora"

# Inside a transformer block: original name part -> diffusers name part (one table for both directions).
ORIGINAL_TO_DIFFUSERS = (
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)
_DIFFUSERS_PE = re.compile(r"^(?P<block>transformer_blocks\.\d+)\.pos_embed\.pe$")
_ORIGINAL_ROOT = "temporal_transformer."


def is_hotshot_key(key: str) -> bool:
    return _HOTSHOT_KEY.match(key) is not None


def hotshot_to_original_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HotShot-XL's temporal layers under AnimateDiff's names (its modules are AnimateDiff's temporal
    transformer, one level up); other keys pass unchanged."""
    renamed = {}
    for key, tensor in tensors.items():
        match = _HOTSHOT_KEY.match(key)
        if match:
            rest = match["rest"].replace(".pos_encoder.positional_encoding", ".pos_encoder.pe")
            key = f"{match['level']}.motion_modules.{match['index']}.{_ORIGINAL_ROOT}{rest}"
        renamed[key] = tensor
    return renamed


def is_motion_key(key: str) -> bool:
    return MOTION_KEY.match(key) is not None


def is_diffusers_motion_key(key: str) -> bool:
    match = MOTION_KEY.match(key)
    return match is not None and not match["rest"].startswith(_ORIGINAL_ROOT)


def to_original_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Motion tensors (either naming) under the original names; original keys pass unchanged.

    A diffusers position table is shared by both attentions of a block: it is given to each.
    """
    original: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = MOTION_KEY.match(key)
        rest = match["rest"]
        if rest.startswith(_ORIGINAL_ROOT):
            original[key] = tensor
            continue
        head = f"{match['level']}.motion_modules.{match['index']}.{_ORIGINAL_ROOT}"
        pe = _DIFFUSERS_PE.match(rest)
        if pe:
            for attention in (0, 1):
                original[f"{head}{pe['block']}.attention_blocks.{attention}.pos_encoder.pe"] = tensor
            continue
        rest = f".{rest}"
        for new, old in ORIGINAL_TO_DIFFUSERS:
            if rest.startswith(".transformer_blocks."):
                rest = rest.replace(old, new)
        original[head + rest[1:]] = tensor
    return original


def family_of(key: str) -> str:
    """What a non-motion key of a whole-UNet file is: 'ip-adapter', 'adapter', 'unet' or 'unknown'."""
    if any(part in key for part in IP_ADAPTER_PARTS):
        return "ip-adapter"
    if any(part in key for part in ADAPTER_PARTS):
        return "adapter"
    if SPATIAL_UNET_KEY.match(key):
        return "unet"
    return "unknown"
