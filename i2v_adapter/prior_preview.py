"""A picture of the Frame Similarity Prior: what frames 1.. start from, before any sampling.

Two thumbnails for one image and one set of (t0, p, blur sigma, seed):

- the prior ``D(z0)`` decoded as it is, and
- the same prior at the t0 noise level, ``sqrt(a_t) * D(z0) + sqrt(1 - a_t) * noise`` (the variance-
  preserving form every sampler starts from, whatever its own input scaling), decoded.

The VAE comes in as two functions, so any host (WebUI, diffusers, a test's stand-in) can supply it.
Mask and noise come from one seeded CPU generator: the same settings always give the same picture, and
the mask is the one frame 1 of a generation with that seed gets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .motion.schedule import animatediff_alphas_cumprod  # noqa: F401 (the schedule the preview's callers pass)
from .prior import frame_similarity_prior

Encode = Callable[[Image.Image], torch.Tensor]  # RGB image -> latent (1, C, h, w), already scaled
Decode = Callable[[torch.Tensor], torch.Tensor]  # latents (B, C, h, w) -> pixels (B, 3, H, W) in [-1, 1]

THUMBNAIL_SIDE = 160


def t0_timestep(t0: float, train_steps: int) -> int:
    """The training timestep t0 picks, as img2img strength does: t0 = 1 is the last (noisiest) one."""
    if not 0.0 < t0 <= 1.0:
        raise ValueError(f"t0 must be in (0, 1], got {t0}.")
    return min(train_steps - 1, max(0, round(t0 * train_steps) - 1))


def noise_to_t0(latent: torch.Tensor, noise: torch.Tensor, t0: float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``latent`` noised to the t0 level: sqrt(a_t) * latent + sqrt(1 - a_t) * noise."""
    alpha = float(alphas_cumprod[t0_timestep(t0, len(alphas_cumprod))])
    return alpha ** 0.5 * latent + (1.0 - alpha) ** 0.5 * noise


@dataclass(frozen=True)
class PriorPreview:
    prior: Image.Image  # D(z0), no noise
    noised: Image.Image  # D(z0) at the t0 noise level
    timestep: int  # the training timestep t0 maps to
    signal_share: float  # sqrt(a_t): how much of the prior is left in the starting latent

    def caption(self) -> str:
        return (f"Left: the prior frames 1.. start from. Right: the same at t0 (timestep {self.timestep}, "
                f"{self.signal_share:.0%} of the prior's signal left).")


def prior_latents(z0: torch.Tensor, t0: float, p: float, blur_sigma: float, seed: int,
                  alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prior, noised prior), each (1, C, h, w) float32 on the CPU, from one generator seeded with ``seed``."""
    z0 = (z0 if z0.dim() == 4 else z0.unsqueeze(0)).detach().float().cpu()
    generator = torch.Generator().manual_seed(int(seed))
    prior = frame_similarity_prior(z0, 2, p=p, blur_sigma=blur_sigma, generator=generator)[1:]
    noise = torch.randn(prior.shape, generator=generator)
    return prior, noise_to_t0(prior, noise, t0, alphas_cumprod.double().cpu()).float()


def preview_from_latent(z0: torch.Tensor, decode: Decode, t0: float, p: float, blur_sigma: float, seed: int,
                        alphas_cumprod: torch.Tensor, side: int = THUMBNAIL_SIDE) -> PriorPreview:
    """Both thumbnails from the image's latent z0; one decode call for the two."""
    prior, noised = prior_latents(z0, t0, p, blur_sigma, seed, alphas_cumprod)
    with torch.no_grad():
        pixels = decode(torch.cat([prior, noised]))
    first, second = (thumbnail(frame, side) for frame in pixels)
    timestep = t0_timestep(t0, len(alphas_cumprod))
    return PriorPreview(first, second, timestep, float(alphas_cumprod[timestep]) ** 0.5)


def preview_prior(image: Image.Image, encode: Encode, decode: Decode, t0: float, p: float, blur_sigma: float,
                  seed: int, alphas_cumprod: torch.Tensor, side: int = THUMBNAIL_SIDE) -> PriorPreview:
    """Encode the image, then :func:`preview_from_latent`."""
    with torch.no_grad():
        z0 = encode(image.convert("RGB"))
    return preview_from_latent(z0, decode, t0, p, blur_sigma, seed, alphas_cumprod, side)


def thumbnail(pixels: torch.Tensor, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """(3, H, W) in [-1, 1] -> an RGB image whose longer side is at most ``side``."""
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(np.ascontiguousarray(array))
    image.thumbnail((side, side), Image.LANCZOS)
    return image
