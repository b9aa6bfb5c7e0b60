"""AnimateDiff's motion module for SD1.5, written from the published architecture and its key layout.

One temporal module sits after a UNet layer and mixes each pixel's features across the frames of a chunk:

    x (chunks*frames, C, H, W)
      -> GroupNorm (per frame, as AnimateDiff was trained) -> proj_in
      -> per transformer block: [LayerNorm -> + sinusoidal position -> self-attention over frames] x 2
                                -> LayerNorm -> GEGLU feed-forward        (each with its residual)
      -> proj_out -> + x

Submodule names equal the original files' key names (``temporal_transformer``, ``attention_blocks.N``,
``pos_encoder.pe``, ``norms.N``, ``ff.net.0.proj``, ``ff_norm``), so an original state dict loads as it is.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .group_norm import groupnorm_across_frames

# Fused attention kernels on some GPUs fail above 65,535 rows x heads: attend in slices below that.
_ATTENTION_ROW_LIMIT = 65_535


class FrameLimitError(ValueError):
    """More frames in one chunk than the motion module's position table holds."""


def sinusoidal_table(length: int, channels: int) -> torch.Tensor:
    """(1, length, channels): sin on even channels, cos on odd ones, wavelengths up to 10,000 (Transformer)."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float64) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels, dtype=torch.float64)
    table[0, :, 0::2] = torch.sin(position * frequency)
    table[0, :, 1::2] = torch.cos(position * frequency)
    return table.float()


class PositionalEncoding(nn.Module):
    """Adds the frame index's row of a stored table; the table length is the module's frame limit."""

    def __init__(self, channels: int, max_frames: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_frames, channels))

    @property
    def max_frames(self) -> int:
        return self.pe.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.max_frames:
            raise FrameLimitError(f"the motion module takes at most {self.max_frames} frames in one window, "
                                  f"got {frames}; use context windows for longer videos")
        # .to(x): low-VRAM hosts move modules by their weights, and a buffer can stay behind on the CPU.
        return x + self.pe[:, :frames].to(x)


class TemporalSelfAttention(nn.Module):
    """Multi-head self-attention along the frame axis of (rows, frames, C) sequences."""

    def __init__(self, channels: int, heads: int, max_frames: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Sequential(nn.Linear(channels, channels))
        self.pos_encoder = PositionalEncoding(channels, max_frames)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        rows, frames, channels = x.shape
        return x.view(rows, frames, self.heads, channels // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_encoder(x)
        q, k, v = (self._split_heads(projection(x)) for projection in (self.to_q, self.to_k, self.to_v))
        step = max(1, _ATTENTION_ROW_LIMIT // self.heads)
        out = torch.cat([F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step])
                         for i in range(0, q.shape[0], step)])
        rows, _, frames, head_channels = out.shape
        return self.to_out(out.transpose(1, 2).reshape(rows, frames, self.heads * head_channels))


class GEGLU(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(channels, hidden * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, channels: int, multiplier: int = 4):
        super().__init__()
        hidden = channels * multiplier
        self.net = nn.Sequential(GEGLU(channels, hidden), nn.Dropout(0.0), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TemporalTransformerBlock(nn.Module):
    """Two temporal self-attentions and a feed-forward, each pre-normed and residual."""

    def __init__(self, channels: int, heads: int, max_frames: int, attentions: int = 2):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(channels, heads, max_frames) for _ in range(attentions))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(attentions))
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, norm_groups: int, max_frames: int, blocks: int = 1):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, heads, max_frames) for _ in range(blocks))
        self.proj_out = nn.Linear(channels, channels)
        # AnimateDiff normalises each frame alone here; diffusers' port normalises over all frames of a chunk.
        self.norm_across_frames = False

    def _normed(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if not self.norm_across_frames:
            return self.norm(x)
        return groupnorm_across_frames(self.norm, x, frames)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        rows, channels, height, width = x.shape
        if rows % frames:
            raise ValueError(f"{rows} rows do not split into chunks of {frames} frames")
        chunks = rows // frames
        h = self._normed(x, frames)
        # (chunks*frames, C, H, W) -> (chunks*H*W, frames, C): one sequence over the frames per pixel.
        h = h.view(chunks, frames, channels, height, width).permute(0, 3, 4, 1, 2)
        h = self.proj_in(h.reshape(chunks * height * width, frames, channels))
        for block in self.transformer_blocks:
            h = block(h)
        h = self.proj_out(h)
        h = h.view(chunks, height, width, frames, channels).permute(0, 3, 4, 1, 2)
        return h.reshape(rows, channels, height, width) + x


class TemporalModule(nn.Module):
    """One motion module (a slot's module): ``module(x, frames)`` with x (chunks*frames, C, H, W)."""

    def __init__(self, channels: int, heads: int, norm_groups: int, max_frames: int, blocks: int = 1):
        super().__init__()
        self.channels = channels
        self.temporal_transformer = TemporalTransformer(channels, heads, norm_groups, max_frames, blocks)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)


class MotionBlock(nn.Module):
    """The motion modules of one UNet level (key prefix ``down_blocks.N`` / ``mid_block`` / ``up_blocks.N``)."""

    def __init__(self, channels: int, count: int, heads: int, norm_groups: int, max_frames: int, blocks: int):
        super().__init__()
        self.motion_modules = nn.ModuleList(
            TemporalModule(channels, heads, norm_groups, max_frames, blocks) for _ in range(count))
