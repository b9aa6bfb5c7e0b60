"""A whole motion module: the temporal modules of every UNet level, and their slots.

SD1.5's UNet has four levels (320, 640, 1280, 1280 channels; the last without a SpatialTransformer), SDXL's
three (320, 640, 1280; the first without one). AnimateDiff v1-v3, AnimateLCM, AnimateDiff-SDXL and HotShot-XL
all put two temporal modules per down level and three per up level (one per ldm block), v2 one in the middle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from .architecture import MotionBlock
from .schedule import ANIMATEDIFF_BETAS, ANIMATEDIFF_SDXL_BETAS, BetaSchedule
from .slots import MotionSlot, input_slot, middle_slot, output_slot

# 8 heads and 32 norm groups in every released family (not stored in the files).
SD15_HEADS = 8
SD15_NORM_GROUPS = 32
DOWN_MODULES_PER_LEVEL = 2
UP_MODULES_PER_LEVEL = 3
# HotShot-XL was trained on 8-frame clips; its table holds 24 positions.
HOTSHOT_WINDOW = 8


@dataclass(frozen=True)
class BaseModel:
    """The picture model a motion module is made for: its levels' widths (times the first level's) and which
    levels have a SpatialTransformer (the temporal module runs after it, else after the ResBlock)."""
    name: str
    level_widths: tuple[int, ...]
    attention_levels: tuple[bool, ...]


SD15 = BaseModel("SD1.5", (1, 2, 4, 4), (True, True, True, False))
SDXL = BaseModel("SDXL", (1, 2, 4), (False, True, True))
BASE_MODELS = (SD15, SDXL)
_FAMILY_NAMES = {"AnimateLCM": "AnimateLCM", "HotShot-XL": "HotShot-XL", "SDXL beta": "AnimateDiff-SDXL beta"}


class MotionModule(nn.Module):
    """A motion module (AnimateDiff v1/v2/v3, AnimateLCM, AnimateDiff-SDXL, HotShot-XL); state-dict keys as in
    AnimateDiff's original files.

    ``channels``: the widths of the UNet levels, (320, 640, 1280, 1280) for SD1.5, (320, 640, 1280) for SDXL;
    their count tells the base model.
    ``max_frames``: the position table's length, the most frames one window may hold.
    ``groupnorm_across_frames``: whether the host should run its ResBlock and output GroupNorms over
    all frames of a chunk (see :func:`groupnorm_across_frames`), as AnimateDiff v1 and HotShot-XL were trained.
    ``native_window``: the window it was trained on where that is less than its table (HotShot-XL: 8).
    ``schedule``: the betas it was trained with (AnimateDiff-SDXL: scaled-linear up to 0.020).
    ``notes``: what the loader did with keys it did not use (e.g. a whole UNet's spatial tensors).
    """

    def __init__(self, channels: Sequence[int] = (320, 640, 1280, 1280), max_frames: int = 24,
                 mid_block: bool = False, heads: int = SD15_HEADS, norm_groups: int = SD15_NORM_GROUPS,
                 transformer_blocks: int = 1, version: str = "v1", source: str = "original"):
        super().__init__()
        channels = tuple(channels)
        base = next((base for base in BASE_MODELS if len(base.level_widths) == len(channels)), None)
        if base is None:
            raise ValueError(f"a motion module has 4 levels (SD1.5) or 3 (SDXL), got {len(channels)}")
        common = {"heads": heads, "norm_groups": norm_groups, "max_frames": max_frames,
                  "blocks": transformer_blocks}
        self.down_blocks = nn.ModuleList(MotionBlock(c, DOWN_MODULES_PER_LEVEL, **common) for c in channels)
        self.mid_block = MotionBlock(channels[-1], 1, **common) if mid_block else None
        self.up_blocks = nn.ModuleList(
            MotionBlock(c, UP_MODULES_PER_LEVEL, **common) for c in reversed(channels))
        self.base = base
        self.channels = channels
        self.max_frames = max_frames
        self.version = version
        self.source = source
        self.groupnorm_across_frames = version in ("v1", "HotShot-XL")
        self.native_window = min(HOTSHOT_WINDOW, max_frames) if version == "HotShot-XL" else max_frames
        self.schedule: BetaSchedule = ANIMATEDIFF_SDXL_BETAS if version == "SDXL beta" else ANIMATEDIFF_BETAS
        self.notes: list[str] = []

    def temporal_modules(self) -> list[nn.Module]:
        return [module for _, module in self._placed()]

    def _placed(self):
        attention = self.base.attention_levels
        for level, block in enumerate(self.down_blocks):
            for index, module in enumerate(block.motion_modules):
                yield input_slot(level, index, attention[level]), module
        if self.mid_block is not None:
            yield middle_slot(), self.mid_block.motion_modules[0]
        for level, block in enumerate(self.up_blocks):
            for index, module in enumerate(block.motion_modules):
                yield output_slot(level, index, attention[-1 - level]), module

    def slots(self) -> list[MotionSlot]:
        """The modules in UNet call order with their ldm places: 20 for v1/v3, 21 for v2, 15 for SDXL."""
        return [MotionSlot(block, after_layer, module, module.channels)
                for (block, after_layer), module in self._placed()]

    def set_norm_across_frames(self, across: bool) -> None:
        """The temporal modules' own GroupNorm: per frame as AnimateDiff (default), or over all frames of
        a chunk as diffusers' ``AnimateDiffTransformer3D`` computes it."""
        for module in self.temporal_modules():
            module.temporal_transformer.norm_across_frames = across

    def describe(self) -> str:
        """One line for logs and the UI, e.g. 'AnimateDiff v2 (original), 21 modules, up to 32 frames'."""
        millions = sum(p.numel() for p in self.parameters()) / 1e6
        family = _FAMILY_NAMES.get(self.version, f"AnimateDiff {self.version}")
        return (f"{family} ({self.source}), {len(self.temporal_modules())} modules, "
                f"{millions:.1f} M parameters, up to {self.max_frames} frames per window")
