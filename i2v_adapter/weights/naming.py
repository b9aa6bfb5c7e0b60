"""Layer names: the ldm attn1 path is the canonical name of an adapter layer.

A1111, Forge and our own weight files use ldm paths
(``input_blocks.1.1.transformer_blocks.0.attn1``); diffusers models and the
official weights use diffusers paths
(``down_blocks.0.attentions.0.transformer_blocks.0.attn1``). With two
resnets per down block and three per up block (SD1.5, SD2 and SDXL alike),
the block index maps arithmetically.
"""
from __future__ import annotations

import re

_DIFFUSERS_DOWN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(transformer_blocks\.\d+\.attn1)$")
_DIFFUSERS_MID = re.compile(r"^mid_block\.attentions\.0\.(transformer_blocks\.\d+\.attn1)$")
_DIFFUSERS_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(transformer_blocks\.\d+\.attn1)$")
_LDM_INPUT = re.compile(r"^input_blocks\.(\d+)\.1\.(transformer_blocks\.\d+\.attn1)$")
_LDM_MIDDLE = re.compile(r"^middle_block\.1\.(transformer_blocks\.\d+\.attn1)$")
_LDM_OUTPUT = re.compile(r"^output_blocks\.(\d+)\.1\.(transformer_blocks\.\d+\.attn1)$")

# Path components that belong to temporal (motion) attention, never to spatial attn1.
TEMPORAL_MARKERS = ("motion_module", "temporal")


class UnknownLayerName(ValueError):
    pass


def diffusers_to_ldm(name: str) -> str:
    """``down_blocks.0.attentions.0.transformer_blocks.0.attn1`` -> ``input_blocks.1.1.transformer_blocks.0.attn1``."""
    if m := _DIFFUSERS_DOWN.match(name):
        block, attention, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{3 * block + attention + 1}.1.{rest}"
    if m := _DIFFUSERS_MID.match(name):
        return f"middle_block.1.{m[1]}"
    if m := _DIFFUSERS_UP.match(name):
        block, attention, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{3 * block + attention}.1.{rest}"
    raise UnknownLayerName(name)


def ldm_to_diffusers(name: str) -> str:
    """Inverse of :func:`diffusers_to_ldm`."""
    if m := _LDM_INPUT.match(name):
        index, rest = int(m[1]), m[2]
        block, attention = divmod(index - 1, 3)
        if attention > 1:
            raise UnknownLayerName(name)
        return f"down_blocks.{block}.attentions.{attention}.{rest}"
    if m := _LDM_MIDDLE.match(name):
        return f"mid_block.attentions.0.{m[1]}"
    if m := _LDM_OUTPUT.match(name):
        block, attention = divmod(int(m[1]), 3)
        return f"up_blocks.{block}.attentions.{attention}.{m[2]}"
    raise UnknownLayerName(name)


def is_ldm_name(name: str) -> bool:
    return bool(_LDM_INPUT.match(name) or _LDM_MIDDLE.match(name) or _LDM_OUTPUT.match(name))


def canonical_layer_name(module_path: str) -> str:
    """The ldm name of a spatial attn1 found at ``module_path`` in any supported UNet.

    Paths may carry a prefix (``model.diffusion_model.``, ``unet.``); it is dropped.
    """
    parts = module_path.split(".")
    for start in range(len(parts)):
        tail = ".".join(parts[start:])
        if is_ldm_name(tail):
            return tail
        try:
            return diffusers_to_ldm(tail)
        except UnknownLayerName:
            continue
    raise UnknownLayerName(module_path)


def is_temporal_path(module_path: str) -> bool:
    return any(marker in part for part in module_path.split(".") for marker in TEMPORAL_MARKERS)
