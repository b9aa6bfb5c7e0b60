"""AnimateDiff motion modules (original v1/v2/v3 layout) as a diffusers ``MotionAdapter``.

The original files name a block ``down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0
.attention_blocks.0.to_q.weight``; diffusers drops ``temporal_transformer`` and names the parts like a
``BasicTransformerBlock``. Both attention blocks of the original carry the same sinusoidal table
(``pos_encoder.pe``); diffusers keeps one (``pos_embed.pe``) and applies it before both attentions.
The version is told from the keys: a mid block means v2, otherwise the table length (24 frames v1, 32 v3).
"""
from __future__ import annotations

import re

import torch

from .keys import HOTSHOT_PART, ORIGINAL_TO_DIFFUSERS
from .schedule import ANIMATEDIFF_BETAS, ANIMATEDIFF_SDXL_BETAS, BetaSchedule
from ..weights.adapter import WeightsError
from ..weights.reading import strip_prefixes

# Original name part -> diffusers name part; applied in this order.
_RENAMES = ((".temporal_transformer.", "."), *ORIGINAL_TO_DIFFUSERS)
_PE = re.compile(r"^(?P<block>.+\.transformer_blocks\.\d+)\.attention_blocks\.(?P<attention>\d+)\.pos_encoder\.pe$")
_MOTION = ".motion_modules."

# AnimateDiff's motion modules for SD1.5: 8 heads, 32 norm groups (not stored in the files).
DEFAULT_HEADS = 8
DEFAULT_NORM_GROUPS = 32


def is_motion_key(key: str) -> bool:
    return _MOTION in f".{strip_prefixes(key)}"


def convert_motion_module(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AnimateDiff motion module keys -> diffusers ``MotionAdapter`` keys.

    Keys already in the diffusers layout pass unchanged. A second position table of a block is dropped
    only when it equals the first one (it always does in the released files); otherwise it is an error.
    """
    converted: dict[str, torch.Tensor] = {}
    tables: dict[str, list[torch.Tensor]] = {}
    for key, tensor in tensors.items():
        key = strip_prefixes(key)
        pe = _PE.match(key.replace(".temporal_transformer.", "."))
        if pe:
            tables.setdefault(pe["block"], []).append(tensor)
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        converted[key] = tensor
    for block, found in tables.items():
        if any(not torch.equal(found[0], other) for other in found[1:]):
            raise WeightsError(f"{block}: the two attention blocks have different position tables")
        converted[f"{block}.pos_embed.pe"] = found[0]
    return converted


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m[1] for key in keys if (m := regex.match(key))})


def motion_adapter_config(state_dict: dict[str, torch.Tensor], heads: int = DEFAULT_HEADS,
                          norm_groups: int = DEFAULT_NORM_GROUPS) -> dict:
    """``MotionAdapter`` arguments read from a converted state dict's keys and shapes."""
    keys = list(state_dict)
    blocks = _count(keys, r"^down_blocks\.(\d+)\.motion_modules\.")
    if blocks == 0:
        raise WeightsError("no motion module tensors (down_blocks.*.motion_modules.*) in this file")
    channels = tuple(state_dict[f"down_blocks.{i}.motion_modules.0.proj_in.weight"].shape[0] for i in range(blocks))
    pe = next((tensor for key, tensor in state_dict.items() if key.endswith(".pos_embed.pe")), None)
    if pe is None:
        raise WeightsError("the motion module has no position table (pos_encoder.pe); its frame limit is unknown")
    return {
        "block_out_channels": channels,
        "motion_layers_per_block": _count(keys, r"^down_blocks\.0\.motion_modules\.(\d+)\."),
        "motion_transformer_layers_per_block": _count(
            keys, r"^down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\."),
        "motion_num_attention_heads": heads,
        "motion_norm_num_groups": norm_groups,
        "motion_max_seq_length": pe.shape[-2],
        "use_motion_mid_block": any(key.startswith("mid_block.") for key in keys),
    }


def motion_module_version(config: dict) -> str:
    if config["use_motion_mid_block"]:
        return "v2"
    return "v1" if config["motion_max_seq_length"] == 24 else "v3"


def motion_adapter_from_state_dict(tensors: dict[str, torch.Tensor], heads: int = DEFAULT_HEADS,
                                   norm_groups: int = DEFAULT_NORM_GROUPS):
    """A ``MotionAdapter`` holding every tensor of ``tensors`` (motion keys only); any unused key is an error."""
    from diffusers import MotionAdapter

    state_dict = convert_motion_module({k: v for k, v in tensors.items() if is_motion_key(k)})
    config = motion_adapter_config(state_dict, heads, norm_groups)
    adapter = MotionAdapter(**config)
    expected = adapter.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError(
            "the motion module does not fit a diffusers MotionAdapter: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), "
            f"wrong shape {wrong[:5]} ({len(wrong)})"
        )
    adapter.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return adapter


def motion_betas(tensors: dict, sdxl: bool) -> BetaSchedule:
    """The betas a motion module was trained with: AnimateDiff-SDXL's scaled-linear ones on an SDXL base (unless
    the file is HotShot-XL's), AnimateDiff's linear ones otherwise; as sd-webui-animatediff samples them."""
    hotshot = any(HOTSHOT_PART in f".{strip_prefixes(key)}" for key in tensors)
    return ANIMATEDIFF_SDXL_BETAS if sdxl and not hotshot else ANIMATEDIFF_BETAS
