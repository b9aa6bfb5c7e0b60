"""GroupNorm with its statistics taken over all frames of a chunk, as AnimateDiff v1 was trained.

AnimateDiff v1 inflated the UNet to 5-D tensors, so every GroupNorm of its ResBlocks (and the last one
before the output conv) saw (batch, C, frames, H, W) and averaged over the frames too. A 2-D host UNet
normalises each frame alone; a host that wants v1's behaviour routes those norms through this function.
"""
from __future__ import annotations

import torch
from torch import nn


def groupnorm_across_frames(norm: nn.Module, x: torch.Tensor, frames: int) -> torch.Tensor:
    """``norm`` (a GroupNorm module, applied as it is) on x (chunks*frames, C, H, W), statistics per chunk.

    The module is called on a 5-D view, so a host's own GroupNorm subclass (fp32 upcast, casting ops)
    keeps its behaviour; only the set of values each group averages over grows to all frames.
    """
    rows, channels = x.shape[:2]
    if frames <= 0 or rows % frames:
        raise ValueError(f"{rows} rows do not split into chunks of {frames} frames")
    spatial = x.shape[2:]
    chunks = rows // frames
    grouped = x.reshape(chunks, frames, channels, *spatial).transpose(1, 2)
    normed = norm(grouped)
    return normed.transpose(1, 2).reshape(rows, channels, *spatial)


class AcrossFrames(nn.Module):
    """A stand-in for a norm module that applies it across the frames of each chunk (see ``frames``)."""

    def __init__(self, norm: nn.Module, frames: int):
        super().__init__()
        self.norm = norm
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return groupnorm_across_frames(self.norm, x, self.frames)
