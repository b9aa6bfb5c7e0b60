"""The noise schedule AnimateDiff's SD1.5 motion modules were trained with.

SD1.5 itself uses "scaled linear" betas (linspace of square roots, squared); AnimateDiff trained its SD1.5
motion modules with plain linear betas from 0.00085 to 0.012 over 1000 steps, which ends noisier
(sigma_max about 25 instead of 14.6). diffusers calls it ``beta_schedule="linear"``; ldm and Forge call the
same thing ``sqrt_linear``. AnimateDiff-SDXL was trained on scaled-linear betas up to 0.020, which
sd-webui-animatediff sets for it; HotShot-XL gets the linear ones there, and here too, so that a HotShot video is
the same on every WebUI.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

BETA_START = 0.00085
BETA_END = 0.012
TRAIN_STEPS = 1000


@dataclass(frozen=True)
class BetaSchedule:
    kind: str      # diffusers' ``beta_schedule``
    start: float
    end: float


ANIMATEDIFF_BETAS = BetaSchedule("linear", BETA_START, BETA_END)
ANIMATEDIFF_SDXL_BETAS = BetaSchedule("scaled_linear", BETA_START, 0.020)


def _alphas_cumprod(schedule: BetaSchedule = ANIMATEDIFF_BETAS) -> torch.Tensor:
    if schedule.kind == "linear":
        betas = torch.linspace(schedule.start, schedule.end, TRAIN_STEPS, dtype=torch.float64)
    elif schedule.kind == "scaled_linear":
        betas = torch.linspace(schedule.start ** 0.5, schedule.end ** 0.5, TRAIN_STEPS, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"unknown beta schedule {schedule.kind!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def animatediff_alphas_cumprod(schedule: BetaSchedule = ANIMATEDIFF_BETAS) -> torch.Tensor:
    """(1000,) float32 cumulative products of 1 - beta: AnimateDiff's linear betas, or ``schedule``'s."""
    return _alphas_cumprod(schedule).float()


def animatediff_sigmas(schedule: BetaSchedule = ANIMATEDIFF_BETAS) -> torch.Tensor:
    """(1000,) float32 k-diffusion sigmas of ``schedule``: sqrt((1 - a) / a), rising with the step."""
    alphas_cumprod = _alphas_cumprod(schedule)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()
