"""Where the keyframes sit inside each UNet call, and their keys/values for calls that lack them.

A UNet call holds ``n_chunks`` chunks of ``chunk_length`` contiguous frames
(cond/uncond halves, one context window each). The host (WebUI glue or
pipeline) tells the layout, before every call, how long a chunk is and where
frame 0 (and the last frame, when the video ends on a picture) is in it; the attn1 hooks read it.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


FIRST = "first"
LAST = "last"


@dataclass(frozen=True)
class Window:
    chunk_length: int
    # Position of frame 0 inside each chunk, or None when this window lacks it.
    first_frame_position: int | None = 0
    # Position of the last keyframe (a video that ends on a picture), or None when there is none in this window.
    last_frame_position: int | None = None

    @classmethod
    def from_frames(cls, frames: Sequence[int], last_frame: int | None = None) -> "Window":
        """The window of a context of video frame indices, e.g. ``[28, 29, 30, 31, 0, 1, 2, 3]``;
        ``last_frame``: the index of the last keyframe, if the video has one."""
        frames = list(frames)
        return cls(len(frames), frames.index(0) if 0 in frames else None,
                   frames.index(last_frame) if last_frame is not None and last_frame in frames else None)

    def position(self, keyframe: str) -> int | None:
        return self.first_frame_position if keyframe == FIRST else self.last_frame_position


class ReferenceBank:
    """The keyframes' attn1 keys/values per layer and per call, kept for the rest of one sampling step.

    Filled by the calls of the window that holds a keyframe, read by the windows without it.
    A window may call a layer more than once (cond and uncond apart when the WebUI does not
    batch them, or another extension's extra pass on a subset of rows); the n-th call of a
    window reads what the n-th call of the keyframe's window stored.

    A window holding frame 0 but not the last keyframe runs before the last keyframe's window in the same
    step: it reads the last keyframe's keys/values of the step before (:meth:`fetch_previous`).
    """

    def __init__(self):
        self._entries: dict[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._previous: dict[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def store(self, layer: str, call: int, keys: torch.Tensor, values: torch.Tensor, keyframe: str = FIRST) -> None:
        self._entries[layer, call, keyframe] = (keys.detach(), values.detach())

    def fetch(self, layer: str, call: int, n_chunks: int,
              keyframe: str = FIRST) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._fitting(self._entries.get((layer, call, keyframe)), n_chunks)

    def fetch_previous(self, layer: str, call: int, n_chunks: int,
                       keyframe: str = LAST) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What the step before stored (the keyframe is clean: its keys/values change little from step to step)."""
        return self._fitting(self._previous.get((layer, call, keyframe)), n_chunks)

    @staticmethod
    def _fitting(entry, n_chunks: int):
        if entry is None or entry[0].shape[0] != n_chunks:
            return None
        return entry

    def holds(self, keyframe: str) -> bool:
        """Whether this step or the step before stored the keyframe's keys/values."""
        return any(key[2] == keyframe for key in (*self._entries, *self._previous))

    def next_step(self) -> None:
        """A new sampling step: this step's last-keyframe entries become the previous step's (only those are read
        a step later; frame 0's are let go, so a video without a last picture keeps no second bank)."""
        self._previous = {key: entry for key, entry in self._entries.items() if key[2] == LAST}
        self._entries = {}

    def clear(self) -> None:
        self._entries.clear()
        self._previous.clear()

    def __len__(self) -> int:
        return len(self._entries)


class FrameLayout:
    """Per-generation state shared by the host and the hooks.

    ``keep_reference``: store frame 0's keys/values for windows without frame 0.
    Only needed when the video is longer than the context window.
    ``skip_call``: the host's test for UNet passes whose rows are not this video
    (e.g. another extension's reference pass); the hooks leave those alone.
    """

    def __init__(self, chunk_length: int, first_frame_position: int | None = 0, keep_reference: bool = False,
                 skip_call: Callable[[], bool] | None = None, last_frame: int | None = None):
        self.window = Window(chunk_length, first_frame_position)
        # The last keyframe's index in the video (it ends on a picture), or None.
        self.last_frame = last_frame
        self.keep_reference = keep_reference
        self.skip_call = skip_call
        self.bank = ReferenceBank()
        self.step: int | None = None
        self._calls: Counter = Counter()
        # What the hooks did, per layer call: anchored (frame 0 in the call), banked (from the bank),
        # unreferenced (no frame 0 anywhere), untouched (rows not a multiple of the chunk length); with a last
        # keyframe also: last anchored, last banked, last from the previous step, last missing.
        self.stats: Counter = Counter()

    @property
    def keyframes(self) -> tuple[str, ...]:
        return (FIRST, LAST) if self.last_frame is not None else (FIRST,)

    def priming_window(self, windows: Sequence[Sequence[int]]) -> list[int] | None:
        """The window to run once, its result dropped, before the first step's windows: the one holding the last
        keyframe, when frame 0's window (run first) lacks it and no step has stored its keys/values yet. So
        that every window of every step attends to both keyframes."""
        if self.last_frame is None or not windows or self.last_frame in windows[0] or self.bank.holds(LAST):
            return None
        return next((list(window) for window in windows if self.last_frame in window), None)

    @contextmanager
    def priming(self):
        """Counts of the priming pass kept apart (``priming calls``): they are no window of the video."""
        stats, self.stats = self.stats, Counter()
        try:
            yield
        finally:
            stats["priming calls"] += sum(self.stats.values())
            self.stats = stats

    def set_window(self, window: Window) -> None:
        self.window = window
        self._calls.clear()

    def begin_step(self, step: int) -> None:
        """Called by the host before each sampling step; a new step empties the bank."""
        self._calls.clear()
        if step != self.step:
            self.bank.next_step()
            self.step = step

    def next_call(self, layer: str) -> int:
        """Ordinal of this call of ``layer`` within the current window (0, 1, ...)."""
        ordinal = self._calls[layer]
        self._calls[layer] += 1
        return ordinal

    def skips_this_call(self) -> bool:
        return self.skip_call is not None and self.skip_call()

    def chunk_count(self, rows: int) -> int | None:
        """Number of chunks in a call of ``rows`` rows, or None when the rows do not split into chunks."""
        length = self.window.chunk_length
        if length <= 0 or rows % length:
            return None
        return rows // length


def first_frame_rows(rows: int, chunk_length: int, first_frame_position: int) -> list[int]:
    """Absolute rows of frame 0: ``k * chunk_length + first_frame_position`` for every chunk k."""
    return list(range(first_frame_position, rows, chunk_length))


def frame_zero_windows_first(windows: Sequence[Sequence[int]], last_frame: int | None = None) -> list[list[int]]:
    """The windows of one pass with those holding frame 0 moved to the front, then those holding the last
    keyframe (when the video ends on a picture), order kept otherwise.

    Windows without a keyframe read its keys/values from the bank, which the keyframe's
    window fills. Where windows overlap, the later one writes last; moving
    keyframe windows first means the other windows have the final word there.
    """
    windows = [list(window) for window in windows]
    both = [w for w in windows if 0 in w and last_frame is not None and last_frame in w]
    first = both + [w for w in windows if 0 in w and w not in both]  # a window holding both keyframes fills both
    last = [w for w in windows if 0 not in w and last_frame is not None and last_frame in w]
    return first + last + [w for w in windows if w not in first and w not in last]
