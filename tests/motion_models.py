"""Tiny motion modules and UNets of the real architectures, and their diffusers counterparts.

Widths (32, 64, 128, 128) keep AnimateDiff's real 8 heads and 32 norm groups; the ldm UNet has SD1.5's
block structure. Random motion modules get non-zero proj_out (trained ones are not zero-initialised).
"""
from __future__ import annotations

import torch

import models
from i2v_adapter.motion import MotionModule

TINY_CHANNELS = (32, 64, 128, 128)
VERSIONS = {"v1": {"max_frames": 24, "mid_block": False}, "v2": {"max_frames": 32, "mid_block": True},
            "v3": {"max_frames": 32, "mid_block": False}}


def random_motion_module(version: str = "v2", seed: int = 5, std: float = 0.2) -> MotionModule:
    torch.manual_seed(seed)
    module = MotionModule(TINY_CHANNELS, version=version, **VERSIONS[version])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
            else:
                parameter.copy_(1 + torch.randn(parameter.shape, generator=generator) * 0.1 if name.endswith(
                    "weight") else torch.randn(parameter.shape, generator=generator) * 0.1)
    return module.eval()


def tiny_ldm_unet(seed: int = 0):
    return models.ldm_unet(model_channels=TINY_CHANNELS[0], seed=seed)


def diffusers_unet_like(ldm_unet):
    """The same UNet as a diffusers ``UNet2DConditionModel``, weights converted from the ldm ones."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=TINY_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=models.CONTEXT_DIM, attention_head_dim=4, norm_num_groups=32,
    )
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in ldm_unet.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(checkpoint, unet.config)
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return unet.eval()


def diffusers_motion_unet(ldm_unet, motion: MotionModule):
    """diffusers' ``UNetMotionModel`` with the same spatial and motion weights."""
    from diffusers import MotionAdapter, UNetMotionModel

    from i2v_adapter.pipeline.motion_module import convert_motion_module

    adapter = MotionAdapter(block_out_channels=motion.channels, motion_layers_per_block=2,
                            motion_num_attention_heads=8, motion_norm_num_groups=32,
                            motion_max_seq_length=motion.max_frames, use_motion_mid_block=motion.mid_block is not None)
    adapter.load_state_dict(convert_motion_module(motion.state_dict()), strict=True)
    return UNetMotionModel.from_unet2d(diffusers_unet_like(ldm_unet), adapter).eval()
