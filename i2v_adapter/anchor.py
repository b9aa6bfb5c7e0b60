"""Keep frame 0 clean: the UNet sees exactly z0 for frame 0 at every step (and the last keyframe's latent for
the last frame, when the video ends on a picture).

Two sampler families:
- k-diffusion (eps and v denoisers, LCM): the UNet input is ``x * c_in`` with
  ``c_in = 1 / sqrt(sigma^2 + 1)``, so frame 0's rows must hold ``z0 * sqrt(sigma^2 + 1)``.
- timestep samplers (DDIM, PLMS, UniPC, diffusers schedulers): ``x`` goes to the UNet as is.
Sigma (or the timestep) stays unchanged, as in the official pipeline.
"""
from __future__ import annotations

from typing import Sequence

import torch


def _as_frame(z0: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if z0.dim() == like.dim():
        z0 = z0[0]
    return z0.to(device=like.device, dtype=like.dtype)


def clean_model_input(x: torch.Tensor, z0: torch.Tensor, rows: Sequence[int],
                      sigma: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` with frame 0's rows replaced so that the UNet receives z0 there.

    ``sigma``: the per-row sigmas of a k-diffusion sampler; None for timestep samplers.
    """
    return clean_keyframes(x, [(z0, rows)], sigma)


def clean_keyframes(x: torch.Tensor, keyframes: Sequence[tuple[torch.Tensor, Sequence[int]]],
                    sigma: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` (one copy) with each keyframe's rows set so that the UNet receives its latent:
    ``[(z0, rows of frame 0), (z_last, rows of the last frame)]``."""
    x = x.clone()
    for latent, rows in keyframes:
        frame = _as_frame(latent, x)
        for row in rows:
            x[row] = frame if sigma is None else frame * torch.sqrt(sigma[row].to(x.dtype) ** 2 + 1)
    return x


def clean_denoised(denoised: torch.Tensor, z0: torch.Tensor, rows: Sequence[int] = (0,)) -> torch.Tensor:
    """The denoised (x0) prediction with frame 0 set to z0."""
    denoised = denoised.clone()
    frame = _as_frame(z0, denoised)
    for row in rows:
        denoised[row] = frame
    return denoised


def unet_input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """k-diffusion's ``c_in`` for eps and v denoisers."""
    return 1 / torch.sqrt(sigma ** 2 + 1)

