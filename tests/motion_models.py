"""Tiny motion modules and UNets of the real architectures, and their diffusers counterparts.

Widths (32, 64, 128, 128) keep AnimateDiff's real 8 heads and 32 norm groups; the ldm UNet has SD1.5's
block structure. Random motion modules get non-zero proj_out (trained ones are not zero-initialised).
"""
from __future__ import annotations

import copy
import functools
import re

import torch

import models
from i2v_adapter.motion import MotionModule

TINY_CHANNELS = (32, 64, 128, 128)
TINY_SDXL_CHANNELS = (32, 64, 128)
VERSIONS = {"v1": {"max_frames": 24, "mid_block": False}, "v2": {"max_frames": 32, "mid_block": True},
            "v3": {"max_frames": 32, "mid_block": False},
            "SDXL beta": {"max_frames": 32, "mid_block": False}, "HotShot-XL": {"max_frames": 24, "mid_block": False}}
SDXL_VERSIONS = ("SDXL beta", "HotShot-XL")


def random_motion_module(version: str = "v2", seed: int | None = None, std: float = 0.2) -> MotionModule:
    """Random weights of ``version``'s layout; each version its own weights unless ``seed`` is given."""
    seed = 5 + list(VERSIONS).index(version) if seed is None else seed
    return copy.deepcopy(_random_motion_module(version, seed, std))


@functools.lru_cache(maxsize=None)
def _random_motion_module(version: str, seed: int, std: float) -> MotionModule:
    torch.manual_seed(seed)
    channels = TINY_SDXL_CHANNELS if version in SDXL_VERSIONS else TINY_CHANNELS
    module = MotionModule(channels, version=version, **VERSIONS[version])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
            else:
                parameter.copy_(1 + torch.randn(parameter.shape, generator=generator) * 0.1 if name.endswith(
                    "weight") else torch.randn(parameter.shape, generator=generator) * 0.1)
    return module.eval()


def tiny_ldm_unet(seed: int = 0, sdxl_levels: bool = False):
    return models.ldm_unet(model_channels=TINY_CHANNELS[0], seed=seed, sdxl_levels=sdxl_levels)


def diffusers_unet_like(ldm_unet):
    """The same UNet as a diffusers ``UNet2DConditionModel``, weights converted from the ldm ones."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sdxl_levels = len(ldm_unet.input_blocks) == 9
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2 if sdxl_levels else ("CrossAttnDownBlock2D",) * 3 + (
        "DownBlock2D",)
    up = tuple(name.replace("Down", "Up") for name in reversed(down))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=TINY_SDXL_CHANNELS if sdxl_levels else TINY_CHANNELS,
        down_block_types=down, up_block_types=up,
        cross_attention_dim=models.CONTEXT_DIM, attention_head_dim=4, norm_num_groups=32,
    )
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in ldm_unet.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(checkpoint, unet.config)
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return unet.eval()


def diffusers_motion_unet(ldm_unet, motion: MotionModule, unet2d=None):
    """diffusers' ``UNetMotionModel`` with the same spatial and motion weights (``unet2d``: the ldm UNet
    already converted, to save the conversion)."""
    from diffusers import UNetMotionModel

    adapter = diffusers_motion_adapter(motion)
    unet2d = unet2d if unet2d is not None else diffusers_unet_like(ldm_unet)
    return UNetMotionModel.from_unet2d(unet2d, adapter).eval()


# ---------------------------------------------------------------- state dicts of each file format


def original_state_dict(version: str = "v2", seed: int | None = None) -> dict:
    """The original AnimateDiff layout (our modules carry the original key names)."""
    return {key: tensor.clone() for key, tensor in random_motion_module(version, seed).state_dict().items()}


def diffusers_motion_adapter(motion: MotionModule):
    from diffusers import MotionAdapter

    from i2v_adapter.motion.diffusers_layout import convert_motion_module

    adapter = MotionAdapter(block_out_channels=motion.channels, motion_layers_per_block=2,
                            motion_num_attention_heads=8, motion_norm_num_groups=32,
                            motion_max_seq_length=motion.max_frames,
                            use_motion_mid_block=motion.mid_block is not None)
    adapter.load_state_dict(convert_motion_module(motion.state_dict()), strict=True)
    return adapter.eval()


def ipplus_state_dict(seed: int = 5) -> dict:
    """A whole diffusers 3D UNet as the official ipplus file: spatial UNet, v1 motion modules (original
    names), IP-Adapter K/V beside every attn2 and the adapter's attn1 projections."""
    spatial = diffusers_unet_like(tiny_ldm_unet()).state_dict()
    whole = {key: tensor.clone() for key, tensor in spatial.items()}
    generator = torch.Generator().manual_seed(seed)
    for key, tensor in spatial.items():
        if key.endswith("attn2.to_k.weight"):
            for name in ("to_k_ip", "to_v_ip"):
                whole[key.replace("to_k", name)] = torch.randn(tensor.shape, generator=generator)
        if key.endswith("attn1.to_q.weight"):
            channels = tensor.shape[0]
            whole[key.replace("to_q", "to_q_ff")] = torch.randn(channels, channels, generator=generator)
            whole[key.replace("to_q.weight", "to_out_ff.weight")] = torch.randn(channels, channels,
                                                                                generator=generator)
            whole[key.replace("to_q.weight", "to_out_ff.bias")] = torch.randn(channels, generator=generator)
    whole.update(original_state_dict("v1"))
    return whole


def sdxl_state_dict(seed: int | None = None) -> dict:
    """AnimateDiff-SDXL's layout: three levels (down 0..2, up 0..2), no mid block, 32 positions."""
    return original_state_dict("SDXL beta", seed)


def hotshot_state_dict(seed: int | None = None) -> dict:
    """HotShot-XL's released layout: ``temporal_attentions.N`` holds the temporal transformer's parts directly
    (norm, proj_in, transformer_blocks, proj_out) and each attention a ``pos_encoder.positional_encoding``."""
    hotshot = {}
    for key, tensor in original_state_dict("HotShot-XL", seed).items():
        key = re.sub(r"\.motion_modules\.(\d+)\.temporal_transformer\.", r".temporal_attentions.\1.", key)
        hotshot[key.replace(".pos_encoder.pe", ".pos_encoder.positional_encoding")] = tensor
    return hotshot
