"""I2V-Adapter engine: first-frame attention, clean first frame, Frame Similarity Prior.

Knows nothing of any WebUI; hosts drive it through :class:`FrameLayout` and :class:`FirstFrameHooks`.
"""
from .weights.adapter import AdapterWeights, LayerWeights, WeightsError
from .anchor import clean_denoised, clean_model_input
from .color import match_video_colors
from .hooks import FirstFrameHooks, find_attn1_layers, remove_all_hooks
from .layout import FrameLayout, Window, first_frame_rows
from .prior import frame_similarity_prior

__all__ = [
    "AdapterWeights", "LayerWeights", "WeightsError", "clean_denoised", "clean_model_input",
    "match_video_colors", "FirstFrameHooks", "find_attn1_layers", "remove_all_hooks",
    "FrameLayout", "Window", "first_frame_rows", "frame_similarity_prior",
]
