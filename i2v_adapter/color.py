"""Optional colour match of every frame to frame 0 (the official post-process).

Histogram matching of the a and b channels in CIELAB, lightness kept. The official code
converted RGB data with OpenCV's BGR conversion; here the conversion matches the data.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def _match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map the values of ``source`` (uint8) so that its histogram follows ``reference``'s."""
    source_cdf = np.cumsum(np.bincount(source.ravel(), minlength=256)).astype(np.float64)
    reference_cdf = np.cumsum(np.bincount(reference.ravel(), minlength=256)).astype(np.float64)
    source_cdf /= source_cdf[-1]
    reference_cdf /= reference_cdf[-1]
    lookup = np.interp(source_cdf, reference_cdf, np.arange(256))
    return np.clip(np.rint(lookup), 0, 255).astype(np.uint8)[source]


def match_colors(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, 3 uint8 RGB) with its colour (a, b) histograms matched to ``reference``."""
    frame_lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB)
    reference_lab = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB)
    for channel in (1, 2):
        frame_lab[..., channel] = _match_channel(frame_lab[..., channel], reference_lab[..., channel])
    return cv2.cvtColor(frame_lab, cv2.COLOR_LAB2RGB)


def match_video_colors(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frames 1.. matched to frame 0; frame 0 is returned unchanged."""
    reference = frames[0]
    return [reference] + [match_colors(frame, reference) for frame in frames[1:]]
