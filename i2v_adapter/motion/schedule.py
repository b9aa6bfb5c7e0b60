"""The noise schedule AnimateDiff's SD1.5 motion modules were trained with.

SD1.5 itself uses "scaled linear" betas (linspace of square roots, squared); AnimateDiff trained its SD1.5
motion modules with plain linear betas from 0.00085 to 0.012 over 1000 steps, which ends noisier
(sigma_max about 25 instead of 14.6). diffusers calls it ``beta_schedule="linear"``; ldm and Forge call the
same thing ``sqrt_linear``. AnimateDiff-SDXL was trained on scaled-linear betas up to 0.020, which
sd-webui-animatediff sets for it (HotShot-XL keeps the linear ones).
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


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(BETA_START, BETA_END, TRAIN_STEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def animatediff_alphas_cumprod() -> torch.Tensor:
    """(1000,) float32 cumulative products of 1 - beta for the linear betas."""
    return _alphas_cumprod().float()


def animatediff_sigmas() -> torch.Tensor:
    """(1000,) float32 k-diffusion sigmas of the same schedule: sqrt((1 - a) / a), rising with the step."""
    alphas_cumprod = _alphas_cumprod()
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()
