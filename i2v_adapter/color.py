"""Optional colour match of every frame to frame 0 (the official post-process).

Histogram matching of the a and b channels in CIELAB, lightness kept. The official code
converted RGB data with OpenCV's BGR conversion; here the conversion matches the data.
Matching is quantile matching: every value maps onto a value the reference really has, so a
frame's extremes never leave the reference's range.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

try:  # what the WebUI's own colour correction uses; every WebUI ships it
    from skimage.exposure import match_histograms as _library_match
except ImportError:  # the command line without scikit-image
    _library_match = None


def quantile_match(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``source`` (uint8) remapped so that its value quantiles follow ``reference``'s, as float values."""
    source_values, source_index, source_counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    reference_values, reference_counts = np.unique(reference.ravel(), return_counts=True)
    source_quantiles = np.cumsum(source_counts) / source.size
    reference_quantiles = np.cumsum(reference_counts) / reference.size
    mapped = np.interp(source_quantiles, reference_quantiles, reference_values)
    return mapped[source_index].reshape(source.shape)


def _match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    matched = _library_match(source, reference) if _library_match is not None else quantile_match(source, reference)
    return np.clip(np.rint(matched), 0, 255).astype(np.uint8)


def match_colors(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, 3 uint8 RGB) with its colour (a, b) histograms matched to ``reference``."""
    frame_lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB)
    reference_lab = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB)
    for channel in (1, 2):
        frame_lab[..., channel] = _match_channel(frame_lab[..., channel], reference_lab[..., channel])
    return cv2.cvtColor(frame_lab, cv2.COLOR_LAB2RGB)


def match_video_colors(frames: Sequence[np.ndarray], ends_on_last: bool = False) -> list[np.ndarray]:
    """Frames 1.. matched to frame 0; frame 0 is returned unchanged.

    ``ends_on_last``: the last frame is a keyframe too (a video from picture A to picture B): it is kept, and
    frame i in between is matched to both, mixed by its position ``i / (N - 1)``.
    """
    reference = frames[0]
    if not ends_on_last or len(frames) < 3:
        return [reference] + [match_colors(frame, reference) for frame in frames[1:]]
    last, count = frames[-1], len(frames) - 1
    mixed = [(1 - i / count) * match_colors(frame, reference).astype(np.float32)
             + i / count * match_colors(frame, last).astype(np.float32) for i, frame in enumerate(frames[1:-1], 1)]
    return [reference] + [np.clip(np.rint(frame), 0, 255).astype(np.uint8) for frame in mixed] + [last]
