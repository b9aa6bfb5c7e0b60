"""Context windows: which frames each UNet call of a long video holds.

Windows of ``length`` frames slide over the video with ``overlap`` frames shared between neighbours;
the last one is pulled back to end on the last frame, so every window is full. Windows holding frame 0
come first in every step: they fill frame 0's key/value bank that the other windows read.

A closed loop treats the video as a circle: after the last frame come frames 0, 1, ... again, so windows
wrap round (``[28, 29, 30, 31, 0, 1, ...]``) and the motion module makes the last frames lead into the
first ones. ``LOOP`` wraps with as few windows as cover the circle with ``overlap`` frames at every seam;
``LOOP_EVERY_STRIDE`` starts a window at every stride round the whole circle (more windows: each frame
sits in about ``length / stride`` of them, a firmer loop). A video that fits one window gets a second one,
rolled by half the video, so its seam sits in the middle of a window too.
"""
from __future__ import annotations

from ..layout import frame_zero_windows_first

LOOP_OFF = "off"
LOOP = "loop"
LOOP_WITH_PROMPTS = "loop+prompts"
LOOP_EVERY_STRIDE = "loop-every-stride"
LOOP_MODES = (LOOP_OFF, LOOP, LOOP_WITH_PROMPTS, LOOP_EVERY_STRIDE)


def context_windows(frames: int, length: int | None, overlap: int, loop: str = LOOP_OFF) -> list[list[int]]:
    """Frame indices per window, covering 0..frames-1; one window when ``frames <= length`` and no loop."""
    if frames < 1:
        raise ValueError(f"a video needs at least one frame, got {frames}")
    if loop not in LOOP_MODES:
        raise ValueError(f"unknown closed-loop mode {loop!r}; known: {', '.join(LOOP_MODES)}")
    length = frames if length is None else length
    if length < 1:
        raise ValueError(f"the context length must be at least 1, got {length}")
    if length >= frames:
        if loop == LOOP_OFF or frames < 2:
            return [list(range(frames))]
        return [list(range(frames)), _circular(frames // 2, frames, frames)]
    if not 0 <= overlap < length:
        raise ValueError(f"the context overlap must be from 0 to {length - 1}, got {overlap}")
    stride = length - overlap
    if loop == LOOP_OFF:
        starts = list(range(0, frames - length + 1, stride))
        if starts[-1] + length < frames:
            starts.append(frames - length)
    elif loop == LOOP_EVERY_STRIDE:
        starts = list(range(0, frames, stride))
    else:  # until the last window reaches `overlap` frames past the seam, into frame 0's window
        starts = [0]
        while starts[-1] + length < frames + overlap:
            starts.append(starts[-1] + stride)
    return frame_zero_windows_first([_circular(start, length, frames) for start in starts])


def _circular(start: int, length: int, frames: int) -> list[int]:
    return [(start + i) % frames for i in range(length)]
