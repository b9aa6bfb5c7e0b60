"""What the adapter learns from: frame 0 clean, the other frames noised at one shared timestep, epsilon MSE
on frames 1.. only, captions (and IP-Adapter tokens) dropped now and then for classifier-free guidance.

The noise schedule is the motion module's (AnimateDiff's linear betas 0.00085 to 0.012; AnimateDiff-SDXL's
scaled-linear ones to 0.020), the one the samplers use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...motion.schedule import ANIMATEDIFF_BETAS, BetaSchedule
from ..data import sample_rng

TRAIN_TIMESTEPS = 1000
_NOISE, _DROPOUT = 1, 2  # purposes of a sample's random streams (0 is the data's)


def make_noise_scheduler(betas: BetaSchedule = ANIMATEDIFF_BETAS):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_start=betas.start, beta_end=betas.end,
                         beta_schedule=betas.kind, prediction_type="epsilon")


@dataclass
class Draws:
    """The random part of a batch, one row per sample: from (seed, sample number) only."""

    timesteps: torch.Tensor     # (B,) long
    noise: torch.Tensor         # (B, C, F - 1, h, w) for frames 1..
    keep_text: torch.Tensor     # (B,) bool
    keep_image: torch.Tensor    # (B,) bool


def draw(samples: torch.Tensor, seed: int, noise_shape: tuple, text_dropout: float, image_dropout: float) -> Draws:
    timesteps, noise, keep_text, keep_image = [], [], [], []
    for number in samples.tolist():
        rng = sample_rng(seed, number, _NOISE)
        timesteps.append(int(rng.integers(0, TRAIN_TIMESTEPS)))
        noise.append(torch.from_numpy(rng.standard_normal(noise_shape, dtype=np.float32)))
        dropout = sample_rng(seed, number, _DROPOUT).random(2)
        keep_text.append(bool(dropout[0] >= text_dropout))
        keep_image.append(bool(dropout[1] >= image_dropout))
    return Draws(torch.tensor(timesteps), torch.stack(noise), torch.tensor(keep_text), torch.tensor(keep_image))


def captions_after_dropout(captions: list[str], keep_text: torch.Tensor) -> list[str]:
    return [caption if keep else "" for caption, keep in zip(captions, keep_text.tolist())]


def pixels_to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def encode_video(vae, pixels: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """(B, F, 3, H, W) uint8 -> latents (B, C, F, h, w): the posterior mean, as the sampler encodes frame 0."""
    batch, frames = pixels.shape[:2]
    flat = pixels.reshape(batch * frames, *pixels.shape[2:])
    means = []
    with torch.no_grad():
        for start in range(0, flat.shape[0], chunk):
            part = pixels_to_unit_range(flat[start:start + chunk]).to(device=vae.device, dtype=vae.dtype)
            means.append(vae.encode(part).latent_dist.mean * vae.config.scaling_factor)
    latents = torch.cat(means).float()
    return latents.reshape(batch, frames, *latents.shape[1:]).permute(0, 2, 1, 3, 4)


def noisy_video(latents: torch.Tensor, draws: Draws, scheduler) -> torch.Tensor:
    """Frame 0 exactly the clean latent; frames 1.. noised at the sample's one timestep."""
    noise = draws.noise.to(device=latents.device, dtype=latents.dtype)
    timesteps = draws.timesteps.to(latents.device)
    noised = scheduler.add_noise(latents[:, :, 1:], noise, timesteps)
    return torch.cat([latents[:, :, :1], noised], dim=2)


def first_frame_free_loss(prediction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Epsilon MSE over frames 1..; frame 0's prediction takes no part (it is never denoised)."""
    return F.mse_loss(prediction[:, :, 1:].float(), noise.to(prediction.device).float())


def per_frame_rows(context: torch.Tensor, frames: int) -> torch.Tensor:
    """diffusers' motion UNet reads one context row per frame, batch-major like its sample rows."""
    return context.repeat_interleave(frames, dim=0)

