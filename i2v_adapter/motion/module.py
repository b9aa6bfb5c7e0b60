"""A whole SD1.5 motion module: the temporal modules of every UNet level, and their slots."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .architecture import MotionBlock
from .slots import MotionSlot, input_slot, middle_slot, output_slot

# AnimateDiff's SD1.5 motion modules: 8 heads, 32 norm groups (not stored in the files), two per down
# level, three per up level (one per ldm block), one in the middle for v2.
SD15_HEADS = 8
SD15_NORM_GROUPS = 32
DOWN_MODULES_PER_LEVEL = 2
UP_MODULES_PER_LEVEL = 3
LEVEL_WIDTHS = (1, 2, 4, 4)


class MotionModule(nn.Module):
    """AnimateDiff SD1.5 motion module (v1, v2 or v3); state-dict keys as in the original files.

    ``channels``: the widths of the four UNet levels, (320, 640, 1280, 1280) for SD1.5.
    ``max_frames``: the position table's length, the most frames one window may hold.
    ``groupnorm_across_frames``: whether the host should run its ResBlock and output GroupNorms over
    all frames of a chunk (see :func:`groupnorm_across_frames`), as AnimateDiff v1 was trained.
    ``notes``: what the loader did with keys it did not use (e.g. a whole UNet's spatial tensors).
    """

    def __init__(self, channels: Sequence[int] = (320, 640, 1280, 1280), max_frames: int = 24,
                 mid_block: bool = False, heads: int = SD15_HEADS, norm_groups: int = SD15_NORM_GROUPS,
                 transformer_blocks: int = 1, version: str = "v1", source: str = "original"):
        super().__init__()
        channels = tuple(channels)
        if len(channels) != len(LEVEL_WIDTHS):
            raise ValueError(f"an SD1.5 motion module has {len(LEVEL_WIDTHS)} levels, got {len(channels)}")
        common = {"heads": heads, "norm_groups": norm_groups, "max_frames": max_frames,
                  "blocks": transformer_blocks}
        self.down_blocks = nn.ModuleList(MotionBlock(c, DOWN_MODULES_PER_LEVEL, **common) for c in channels)
        self.mid_block = MotionBlock(channels[-1], 1, **common) if mid_block else None
        self.up_blocks = nn.ModuleList(
            MotionBlock(c, UP_MODULES_PER_LEVEL, **common) for c in reversed(channels))
        self.channels = channels
        self.max_frames = max_frames
        self.version = version
        self.source = source
        self.groupnorm_across_frames = version == "v1"
        self.notes: list[str] = []

    def temporal_modules(self) -> list[nn.Module]:
        return [module for _, module in self._placed()]

    def _placed(self):
        for level, block in enumerate(self.down_blocks):
            for index, module in enumerate(block.motion_modules):
                yield input_slot(level, index), module
        if self.mid_block is not None:
            yield middle_slot(), self.mid_block.motion_modules[0]
        for level, block in enumerate(self.up_blocks):
            for index, module in enumerate(block.motion_modules):
                yield output_slot(level, index), module

    def slots(self) -> list[MotionSlot]:
        """The modules in UNet call order with their ldm places: 20 for v1/v3, 21 for v2."""
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
        family = self.version if self.version == "AnimateLCM" else f"AnimateDiff {self.version}"
        return (f"{family} ({self.source}), {len(self.temporal_modules())} modules, "
                f"{millions:.1f} M parameters, up to {self.max_frames} frames per window")
