"""State dicts in the layouts of the real weight files, built in memory for the tests."""
from __future__ import annotations

import torch

# The 16 attn1 layers of SD1.5: diffusers block -> channel width.
SD15_DIFFUSERS_BLOCKS = {
    "down_blocks.0.attentions.0": 320,
    "down_blocks.0.attentions.1": 320,
    "down_blocks.1.attentions.0": 640,
    "down_blocks.1.attentions.1": 640,
    "down_blocks.2.attentions.0": 1280,
    "down_blocks.2.attentions.1": 1280,
    "mid_block.attentions.0": 1280,
    "up_blocks.1.attentions.0": 1280,
    "up_blocks.1.attentions.1": 1280,
    "up_blocks.1.attentions.2": 1280,
    "up_blocks.2.attentions.0": 640,
    "up_blocks.2.attentions.1": 640,
    "up_blocks.2.attentions.2": 640,
    "up_blocks.3.attentions.0": 320,
    "up_blocks.3.attentions.1": 320,
    "up_blocks.3.attentions.2": 320,
}
# The same layers in ldm (A1111) names, in the same order.
SD15_LDM_BLOCKS = [
    "input_blocks.1.1", "input_blocks.2.1", "input_blocks.4.1", "input_blocks.5.1", "input_blocks.7.1",
    "input_blocks.8.1", "middle_block.1", "output_blocks.3.1", "output_blocks.4.1", "output_blocks.5.1",
    "output_blocks.6.1", "output_blocks.7.1", "output_blocks.8.1", "output_blocks.9.1", "output_blocks.10.1",
    "output_blocks.11.1",
]
SD15_PARAMETERS = 24_793_280
# The SD1.5 layer names with tiny widths (8/16/32), for tests where the sizes do not matter.
TINY_BLOCKS = {block: channels // 40 for block, channels in SD15_DIFFUSERS_BLOCKS.items()}
ATTN1 = "transformer_blocks.0.attn1"


def sd15_ldm_layer_names() -> list[str]:
    return [f"{block}.{ATTN1}" for block in SD15_LDM_BLOCKS]


def _small_random(shape, generator, dtype) -> torch.Tensor:
    return (torch.randn(shape, generator=generator) * 0.02).to(dtype)


def official_state_dict(dtype=torch.float32, seed: int = 0, blocks: dict[str, int] | None = None) -> dict:
    """``i2v_module.pth`` layout: 3 tensors per layer, diffusers names; 48 keys for SD1.5."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for block, channels in (blocks or SD15_DIFFUSERS_BLOCKS).items():
        prefix = f"{block}.{ATTN1}"
        tensors[f"{prefix}.to_q_ff.weight"] = _small_random((channels, channels), generator, dtype)
        tensors[f"{prefix}.to_out_ff.weight"] = _small_random((channels, channels), generator, dtype)
        tensors[f"{prefix}.to_out_ff.bias"] = _small_random((channels,), generator, dtype)
    return tensors


def unofficial_state_dict(official: dict) -> dict:
    """xUhEngwAng/I2V-Adapter-Unofficial layout holding the same trained tensors (plus frozen to_k/to_v)."""
    tensors = {}
    for key, tensor in official.items():
        prefix, _, suffix = key.partition(".attn1.")
        adapter = f"{prefix}.i2v_adapter"
        if suffix == "to_q_ff.weight":
            tensors[f"{adapter}.to_q.weight"] = tensor
            tensors[f"{adapter}.to_k.weight"] = torch.zeros_like(tensor)
            tensors[f"{adapter}.to_v.weight"] = torch.zeros_like(tensor)
        elif suffix == "to_out_ff.weight":
            tensors[f"{adapter}.to_out.0.weight"] = tensor
        else:
            tensors[f"{adapter}.to_out.0.bias"] = tensor
    return tensors


def _tiny(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, generator=torch.Generator().manual_seed(seed))


MOTION_PE_FRAMES = 24


def motion_module_state_dict() -> dict:
    """A few tensors of an AnimateDiff v1 motion module (down and up blocks, pos_encoder.pe of 24 frames)."""
    tensors = {}
    for block in ("down_blocks.0.motion_modules.0", "down_blocks.3.motion_modules.1", "up_blocks.0.motion_modules.2"):
        base = f"{block}.temporal_transformer"
        tensors[f"{base}.norm.weight"] = _tiny(1)
        tensors[f"{base}.proj_in.weight"] = _tiny(2)
        tensors[f"{base}.proj_out.bias"] = _tiny(3)
        tensors[f"{base}.transformer_blocks.0.attention_blocks.0.to_q.weight"] = _tiny(4)
        tensors[f"{base}.transformer_blocks.0.attention_blocks.1.to_out.0.bias"] = _tiny(5)
        tensors[f"{base}.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"] = torch.zeros(1, MOTION_PE_FRAMES, 8)
        tensors[f"{base}.transformer_blocks.0.norms.1.weight"] = _tiny(6)
        tensors[f"{base}.transformer_blocks.0.ff.net.0.proj.weight"] = _tiny(7)
        tensors[f"{base}.transformer_blocks.0.ff_norm.bias"] = _tiny(8)
    return tensors


def ipplus_state_dict(with_adapter: bool = True, adapter: dict | None = None) -> dict:
    """A minimal whole diffusers 3D UNet like ``animatediff_v15_v1_ipplus.pth``: some keys of every family."""
    tensors = {
        "conv_in.weight": _tiny(),
        "time_embedding.linear_1.weight": _tiny(),
        "down_blocks.0.resnets.0.norm1.weight": _tiny(),
        "down_blocks.0.resnets.1.conv2.bias": _tiny(),
        "down_blocks.0.downsamplers.0.conv.weight": _tiny(),
        "down_blocks.1.resnets.0.conv_shortcut.weight": _tiny(),
        "down_blocks.0.attentions.0.norm.weight": _tiny(),
        "down_blocks.0.attentions.0.proj_in.weight": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_ip.weight": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v_ip.weight": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": _tiny(),
        "down_blocks.0.attentions.0.transformer_blocks.0.norm3.bias": _tiny(),
        "mid_block.attentions.0.proj_out.weight": _tiny(),
        "mid_block.resnets.1.time_emb_proj.weight": _tiny(),
        "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_v_ip.weight": _tiny(),
        "up_blocks.0.upsamplers.0.conv.weight": _tiny(),
        "conv_norm_out.weight": _tiny(),
        "conv_out.bias": _tiny(),
    }
    tensors.update(motion_module_state_dict())
    if with_adapter:
        tensors.update(adapter if adapter is not None else official_state_dict(torch.float16))
    return tensors


# SDXL: 70 attn1 layers. diffusers block -> (transformer blocks per attention, channels, ldm block).
SDXL_BLOCKS = {
    "down_blocks.1.attentions.0": (2, 640, "input_blocks.4.1"),
    "down_blocks.1.attentions.1": (2, 640, "input_blocks.5.1"),
    "down_blocks.2.attentions.0": (10, 1280, "input_blocks.7.1"),
    "down_blocks.2.attentions.1": (10, 1280, "input_blocks.8.1"),
    "mid_block.attentions.0": (10, 1280, "middle_block.1"),
    "up_blocks.0.attentions.0": (10, 1280, "output_blocks.0.1"),
    "up_blocks.0.attentions.1": (10, 1280, "output_blocks.1.1"),
    "up_blocks.0.attentions.2": (10, 1280, "output_blocks.2.1"),
    "up_blocks.1.attentions.0": (2, 640, "output_blocks.3.1"),
    "up_blocks.1.attentions.1": (2, 640, "output_blocks.4.1"),
    "up_blocks.1.attentions.2": (2, 640, "output_blocks.5.1"),
}


def sdxl_layers() -> list[tuple[str, str, int]]:
    """``(diffusers attn1 name, ldm attn1 name, channels)`` for the 70 SDXL layers."""
    return [
        (f"{block}.transformer_blocks.{i}.attn1", f"{ldm}.transformer_blocks.{i}.attn1", channels)
        for block, (depth, channels, ldm) in SDXL_BLOCKS.items()
        for i in range(depth)
    ]
