"""The first-frame branch as a pure tensor function."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def first_frame_attention(
    query: torch.Tensor,
    key0: torch.Tensor,
    value0: torch.Tensor,
    heads: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of every frame of a chunk to that chunk's frame 0.

    query:  (n_chunks * L, N, C), already projected (``to_q_ff(x)``).
    key0, value0: (n_chunks, M, C), frame 0's keys and values of each chunk.
    Returns (n_chunks * L, N, C).

    All L frames of a chunk share one key/value set, so the frames are folded
    into the query sequence: one SDPA call per chunk batch, and frame 0's
    keys/values are never repeated in memory.
    """
    n_chunks, key_tokens, channels = key0.shape
    rows, tokens, _ = query.shape
    frames = rows // n_chunks
    head_dim = channels // heads

    q = query.reshape(n_chunks, frames * tokens, heads, head_dim).transpose(1, 2)
    k = key0.reshape(n_chunks, key_tokens, heads, head_dim).transpose(1, 2)
    v = value0.reshape(n_chunks, key_tokens, heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.transpose(1, 2).reshape(rows, tokens, channels)
