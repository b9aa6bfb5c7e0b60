"""Frame Similarity Prior: frames 1.. start from a blurred, masked copy of the image latent.

``D(z) = M_p * z + (1 - M_p) * blur(z)`` with ``M_p`` a per-element Bernoulli(p) mask
(paper eq. 7). The official code blurs the latent with a 9x9 Gaussian kernel of sigma 18
and uses p = 0.5.

A video that ends on a second picture B (keyframes A -> B) starts frame i from the two priors mixed by its
position: ``(1 - w_i) * D(z_A) + w_i * D(z_B)`` with ``w_i = i / (N - 1)`` and the same mask for both, so that
frame 0 is D(z_A)'s and frame N - 1 D(z_B)'s (then set to z_A and z_B exactly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OFFICIAL_KERNEL_SIZE = 9
OFFICIAL_BLUR_SIGMA = 18.0
OFFICIAL_P = 0.5


def gaussian_kernel(kernel_size: int, sigma: float, dtype=torch.float32) -> torch.Tensor:
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-(offsets ** 2) / (2 * sigma ** 2))
    return (kernel / kernel.sum()).to(dtype)


def gaussian_blur(latent: torch.Tensor, kernel_size: int = OFFICIAL_KERNEL_SIZE,
                  sigma: float = OFFICIAL_BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding, like torchvision's GaussianBlur."""
    if sigma <= 0 or kernel_size <= 1:
        return latent.clone()
    if kernel_size % 2 == 0:
        raise ValueError(f"The blur kernel size must be odd, got {kernel_size}.")
    channels, height, width = latent.shape[1:]
    pad = kernel_size // 2
    # Reflect padding needs the pad to be smaller than the side; tiny latents fall back to replicate.
    mode = "reflect" if pad < min(height, width) else "replicate"
    kernel = gaussian_kernel(kernel_size, sigma, torch.float32).to(latent.device)
    x = latent.float()
    x = F.pad(x, (pad, pad, 0, 0), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    x = F.pad(x, (0, 0, pad, pad), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return x.to(latent.dtype)


def similarity_mask(shape, p: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Bernoulli(p) mask: 1 keeps the sharp latent, 0 takes the blurred one."""
    return (torch.rand(shape, generator=generator, device=device) < p)


def frame_similarity_prior(z0: torch.Tensor, frames: int, p: float = OFFICIAL_P,
                           blur_sigma: float = OFFICIAL_BLUR_SIGMA, kernel_size: int = OFFICIAL_KERNEL_SIZE,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Init latents for a video of ``frames`` frames: frame 0 is z0 exactly, the others ``D(z0)``.

    z0: (C, H, W) or (1, C, H, W). Returns (frames, C, H, W). Each frame gets its own mask.
    The mask is drawn on the CPU so that a seed gives the same prior on every device.
    """
    if frames < 1:
        raise ValueError(f"A video needs at least one frame, got {frames}.")
    z0 = _batched(z0)
    latents = z0.repeat(frames, 1, 1, 1)
    if frames > 1:
        latents[1:] = _priors([z0], frames, p, blur_sigma, kernel_size, generator)[0]
    return latents


def keyframe_prior(z_first: torch.Tensor, z_last: torch.Tensor, frames: int, p: float = OFFICIAL_P,
                   blur_sigma: float = OFFICIAL_BLUR_SIGMA, kernel_size: int = OFFICIAL_KERNEL_SIZE,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Init latents for a video from ``z_first`` to ``z_last``: frame 0 is z_first, frame N - 1 z_last exactly,
    frame i in between ``(1 - w) * D(z_first) + w * D(z_last)`` with ``w = i / (N - 1)`` (one mask per frame,
    shared by both priors; the masks are the ones :func:`frame_similarity_prior` draws for the same generator)."""
    if frames < 3:
        raise ValueError(f"A video from one picture to another needs at least 3 frames, got {frames}.")
    z_first = _batched(z_first)
    z_last = _batched(z_last).to(z_first)
    first, last = _priors([z_first, z_last], frames, p, blur_sigma, kernel_size, generator)
    weights = (torch.arange(1, frames, dtype=torch.float32, device=z_first.device) / (frames - 1)).view(-1, 1, 1, 1)
    latents = torch.cat([z_first, torch.lerp(first, last, weights.to(first.dtype))])
    latents[-1] = z_last[0]
    return latents


def _batched(z: torch.Tensor) -> torch.Tensor:
    return z if z.dim() == 4 else z.unsqueeze(0)


def _priors(latents, frames: int, p: float, blur_sigma: float, kernel_size: int,
            generator: torch.Generator | None) -> list[torch.Tensor]:
    """``D(z)`` for frames 1 .. N-1 of each latent (1, C, H, W), all with the same masks (one per frame)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p}.")
    mask = similarity_mask((frames - 1, *latents[0].shape[1:]), p, generator).to(latents[0].device)
    return [torch.where(mask, z, gaussian_blur(z, kernel_size, blur_sigma)) for z in latents]
