"""Context windows: which frames each UNet call of a long video holds.

Windows of ``length`` frames slide over the video with ``overlap`` frames shared between neighbours;
the last one is pulled back to end on the last frame, so every window is full. Windows holding frame 0
come first in every step: they fill frame 0's key/value bank that the other windows read.
"""
from __future__ import annotations

from ..layout import frame_zero_windows_first


def context_windows(frames: int, length: int | None, overlap: int) -> list[list[int]]:
    """Frame indices per window, covering 0..frames-1; one window when ``frames <= length`` (or no length)."""
    if frames < 1:
        raise ValueError(f"a video needs at least one frame, got {frames}")
    if length is None or length >= frames:
        return [list(range(frames))]
    if length < 1:
        raise ValueError(f"the context length must be at least 1, got {length}")
    if not 0 <= overlap < length:
        raise ValueError(f"the context overlap must be from 0 to {length - 1}, got {overlap}")
    stride = length - overlap
    starts = list(range(0, frames - length + 1, stride))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    return frame_zero_windows_first([list(range(start, start + length)) for start in starts])
