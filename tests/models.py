"""Small random-weight models of the real architectures used by the tests."""
from __future__ import annotations

import torch

from i2v_adapter.weights.adapter import AdapterWeights, LayerWeights
from i2v_adapter.hooks import find_attn1_layers, layer_channels

CONTEXT_DIM = 32


def fill_zero_initialised(model, seed: int):
    """ldm zero-initialises proj_out and out convs: random weights there, or attention would not show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def ldm_unet(model_channels: int = 32, seed: int = 0, sdxl_levels: bool = False):
    """The ldm (A1111) UNet with the SD1.5 layout (16 attn1 layers), tiny widths; ``sdxl_levels``: SDXL's block
    structure instead (three levels, no SpatialTransformer in the first; one transformer block each, not 2/10)."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    levels = {"attention_resolutions": [2, 4], "channel_mult": [1, 2, 4]} if sdxl_levels else {
        "attention_resolutions": [4, 2, 1], "channel_mult": [1, 2, 4, 4]}
    unet = UNetModel(
        image_size=8, in_channels=4, out_channels=4, model_channels=model_channels, num_res_blocks=2, **levels,
        num_heads=4, use_spatial_transformer=True, transformer_depth=1,
        context_dim=CONTEXT_DIM, legacy=False,
    )
    return fill_zero_initialised(unet, seed).eval()


def diffusers_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=4, norm_num_groups=8,
    )
    return fill_zero_initialised(unet, seed).eval()


def random_adapter(unet, seed: int = 1, std: float = 0.05) -> AdapterWeights:
    """Adapter weights for every attn1 of ``unet`` (a trained adapter's to_out_ff is not zero)."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for name, channels in sorted(layer_channels(find_attn1_layers(unet)).items()):
        layers[name] = LayerWeights(
            torch.randn(channels, channels, generator=generator) * std,
            torch.randn(channels, channels, generator=generator) * std,
            torch.randn(channels, generator=generator) * std,
        )
    return AdapterWeights(layers, source_format="test")


def zero_out_adapter(weights: AdapterWeights) -> AdapterWeights:
    """The adapter as initialised for training: to_out_ff is zero."""
    return AdapterWeights(
        {name: LayerWeights(l.q_weight, torch.zeros_like(l.out_weight), torch.zeros_like(l.out_bias))
         for name, l in weights.layers.items()},
        source_format="test",
    )


def ldm_inputs(frames: int, chunks: int = 2, seed: int = 3, size: int = 8):
    """UNet inputs for ``chunks`` chunks of ``frames`` frames: x, timesteps, context."""
    generator = torch.Generator().manual_seed(seed)
    rows = frames * chunks
    x = torch.randn(rows, 4, size, size, generator=generator)
    t = torch.full((rows,), 500.0)
    context = torch.randn(rows, 7, CONTEXT_DIM, generator=generator)
    return x, t, context
