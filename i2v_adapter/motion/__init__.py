"""AnimateDiff motion modules without a WebUI: architecture, file loading, placement, windows, schedule.

A host (the Forge 2 glue, the tests) loads a module with :func:`load_motion_module`, runs each of its
:meth:`MotionModule.slots` after the named layer of its ldm-layout UNet (``module(x, frames)``), routes its
ResBlock GroupNorms through :func:`groupnorm_across_frames` for v1, samples with
:func:`animatediff_alphas_cumprod`, and splits long videos with :func:`context_windows`.
The command line's diffusers pipeline reads the same files as a diffusers ``MotionAdapter`` through
:mod:`.diffusers_layout` (the SDXL modules too), and motion LoRAs are read and merged by :mod:`.lora`.
"""
from .architecture import FrameLimitError, TemporalModule
from .files import MotionModuleError, load_motion_module, motion_module_from_tensors
from .group_norm import groupnorm_across_frames
from .module import MotionModule
from .schedule import animatediff_alphas_cumprod, animatediff_sigmas
from .slots import (
    MotionSlot,
    block_inner_modifier,
    check_unet_fits,
    frames_per_chunk,
    group_norm_wrapper,
    inserted_slots,
    run_with_slots,
)
from .windows import context_windows

__all__ = [
    "FrameLimitError", "TemporalModule", "MotionModuleError", "load_motion_module", "motion_module_from_tensors",
    "groupnorm_across_frames", "MotionModule", "animatediff_alphas_cumprod", "animatediff_sigmas", "MotionSlot",
    "block_inner_modifier", "check_unet_fits", "frames_per_chunk", "group_norm_wrapper", "inserted_slots",
    "run_with_slots", "context_windows",
]
