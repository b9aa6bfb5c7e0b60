"""Where each motion module runs in an ldm-layout UNet, and how a host applies them.

The ldm layout (A1111's ``ldm``/``sgm``, Forge's ``backend/nn/unet.py``, ``ldm_patched``) has three lists of
``TimestepEmbedSequential`` blocks. AnimateDiff's rule: a motion module runs after the block's last
SpatialTransformer, or after its ResBlock where it has none, and so always before an Upsample. SD1.5:

    input_blocks   1, 2, 4, 5, 7, 8 (Res, ST): after layer 1     10, 11 (Res): after layer 0
    middle_block   (Res, ST, Res): after layer 1 (v2 only)
    output_blocks  0, 1, 2 (Res[, Up]): after layer 0            3..11 (Res, ST[, Up]): after layer 1

SDXL's first level has no SpatialTransformer: input blocks 1, 2 and output blocks 6, 7, 8 after layer 0,
input 4, 5, 7, 8 and output 0..5 after layer 1.

``down_blocks.i.motion_modules.j`` -> input block 1 + 3i + j; ``up_blocks.i.motion_modules.j`` -> output
block 3i + j; ``mid_block.motion_modules.0`` -> the middle block.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .group_norm import AcrossFrames, groupnorm_across_frames

INPUT = "input"
MIDDLE = "middle"
OUTPUT = "output"


@dataclass(frozen=True)
class MotionSlot:
    """One motion module's place: ``block`` as the host names it (("input", 4), ("middle", 0), ...),
    ``after_layer`` the index inside that block's TimestepEmbedSequential after which ``module`` runs.

    ``module(x, frames)``: x (chunks*frames, C, H, W) -> same shape, residual included.
    """
    block: tuple[str, int]
    after_layer: int
    module: nn.Module
    channels: int


def input_slot(level: int, index: int, attention: bool) -> tuple[tuple[str, int], int]:
    """``attention``: whether the level's blocks have a SpatialTransformer after their ResBlock."""
    return (INPUT, 1 + 3 * level + index), (1 if attention else 0)


def middle_slot() -> tuple[tuple[str, int], int]:
    return (MIDDLE, 0), 1


def output_slot(level: int, index: int, attention: bool) -> tuple[tuple[str, int], int]:
    return (OUTPUT, 3 * level + index), (1 if attention else 0)


# ---------------------------------------------------------------- checking a host UNet


def _blocks(unet: nn.Module, kind: str) -> Sequence[nn.Module]:
    if kind == MIDDLE:
        return [unet.middle_block]
    return unet.input_blocks if kind == INPUT else unet.output_blocks


def _layer_channels(layer: nn.Module) -> int | None:
    """Output channels of a ResBlock (``out_channels``) or SpatialTransformer (``in_channels``)."""
    name = type(layer).__name__
    if name == "ResBlock":
        return layer.out_channels
    if name == "SpatialTransformer":
        return layer.in_channels
    return None


def check_unet_fits(unet: nn.Module, slots: Sequence[MotionSlot]) -> None:
    """Raise ValueError (one sentence) unless every slot's layer exists and has the module's width.

    A UNet of another layout (an SDXL one for an SD1.5 module, a merge of odd widths) fails here, before any
    generation.
    """
    for slot in slots:
        kind, block_id = slot.block
        blocks = _blocks(unet, kind)
        layers = list(blocks[block_id]) if block_id < len(blocks) else []
        layer = layers[slot.after_layer] if slot.after_layer < len(layers) else None
        channels = _layer_channels(layer) if layer is not None else None
        if channels != slot.channels:
            found = f"{type(layer).__name__} of {channels} channels" if layer is not None else "no such layer"
            raise ValueError(
                f"the loaded model does not have the UNet layout the motion module needs: {kind} block "
                f"{block_id}, layer {slot.after_layer} should give {slot.channels} channels, found {found}")


# ---------------------------------------------------------------- applying the slots


class _SlotCall(nn.Module):
    """A plain ``layer(x)`` for a TimestepEmbedSequential: runs one slot's module with a fixed frame count."""

    def __init__(self, module: nn.Module, frames: int):
        super().__init__()
        self.module = module
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, self.frames)


def _frame_norms(unet: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, child name) of the norms AnimateDiff v1 averaged over frames: each ResBlock's two
    GroupNorms and the one before the output conv (the ldm ``GroupNorm32`` set; not the transformers')."""
    places = []
    for module in unet.modules():
        if type(module).__name__ == "ResBlock":
            places += [(module.in_layers, "0"), (module.out_layers, "0")]
    places.append((unet.out, "0"))
    return places


@contextmanager
def inserted_slots(unet: nn.Module, slots: Sequence[MotionSlot], frames: int,
                   norms_across_frames: bool = False) -> Iterator[None]:
    """Temporarily place ``slots`` into an ldm-layout UNet (A1111-style insertion into the Sequentials).

    Every call of the UNet inside the ``with`` sees ``frames`` frames per chunk; on exit the UNet is
    exactly as before, also after an exception. ``norms_across_frames``: v1's GroupNorm over frames.
    """
    check_unet_fits(unet, slots)
    inserted: list[tuple[nn.Sequential, int]] = []
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        # Highest index first within a block, so the earlier indices stay valid.
        for slot in sorted(slots, key=lambda s: -s.after_layer):
            block = _blocks(unet, slot.block[0])[slot.block[1]]
            block.insert(slot.after_layer + 1, _SlotCall(slot.module, frames))
            inserted.append((block, slot.after_layer + 1))
        if norms_across_frames:
            for parent, name in _frame_norms(unet):
                norm = parent._modules[name]
                parent._modules[name] = AcrossFrames(norm, frames)
                swapped.append((parent, name, norm))
        yield
    finally:
        for parent, name, norm in reversed(swapped):
            parent._modules[name] = norm
        for block, index in reversed(inserted):
            del block[index]


def run_with_slots(unet: nn.Module, slots: Sequence[MotionSlot], frames: int, x: torch.Tensor,
                   timesteps: torch.Tensor, context: torch.Tensor, norms_across_frames: bool = False,
                   **kwargs) -> torch.Tensor:
    """One call of an ldm-layout UNet with the motion modules in place; rows are chunks of ``frames``."""
    with inserted_slots(unet, slots, frames, norms_across_frames):
        return unet(x, timesteps, context, **kwargs)


# ---------------------------------------------------------------- hosts with block inner modifiers


def frames_per_chunk(transformer_options: dict) -> int:
    """Frames in each chunk of a Forge-style UNet call: its rows over the number of cond/uncond chunks."""
    rows = transformer_options["original_shape"][0]
    return rows // max(1, len(transformer_options.get("cond_or_uncond") or [0]))


def block_inner_modifier(slots: Sequence[MotionSlot],
                         frames_of: Callable[[dict], int] = frames_per_chunk) -> Callable:
    """A Forge-style block inner modifier ``fn(x, flag, layer, layer_index, block, transformer_options)``
    that runs each slot's module 'after' its layer in the block named by ``transformer_options['block']``.

    A plain closure (no bound method, no tensors), so cloning a patcher's options does not copy weights.
    """
    by_place = {(slot.block, slot.after_layer): slot.module for slot in slots}

    def run_motion_module(x, flag, layer, layer_index, block, transformer_options):
        if flag != "after":
            return x
        module = by_place.get((tuple(transformer_options.get("block", ())), layer_index))
        if module is None:
            return x
        return module(x, frames_of(transformer_options))

    return run_motion_module


def group_norm_wrapper(frames_of: Callable[[dict], int] = frames_per_chunk) -> Callable:
    """A Forge-style group-norm wrapper ``fn(norm, x, transformer_options)`` with v1's statistics."""

    def norm_across_frames(norm, x, transformer_options):
        return groupnorm_across_frames(norm, x, frames_of(transformer_options))

    return norm_across_frames
