"""The image-to-video sampling loop on a diffusers ``UNetMotionModel``.

Official semantics (KwaiVGI/I2V-Adapter ``pipeline_i2v_adapter.py``): frame 0 is the clean image latent
z0 in every UNet call, with the same timestep as the other frames, and it is never stepped. Frames 1..
start from the Frame Similarity Prior noised to the start timestep that t0 picks (img2img-style
truncation: t0 = 1 runs every step). Latents are ``(batch, channels, frames, h, w)`` as diffusers'
motion UNet takes them; it folds them into ``batch * frames`` rows with each batch item's frames
contiguous, so a CFG call is two chunks of one window each, the layout the hooks expect.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..layout import FrameLayout, Window, frame_zero_windows_first
from ..motion.schedule import ANIMATEDIFF_BETAS, BetaSchedule
from ..motion.windows import context_windows
from ..prior import OFFICIAL_BLUR_SIGMA, OFFICIAL_P, frame_similarity_prior, keyframe_prior

SCHEDULERS = ("ddim", "euler", "euler_a", "dpm++")


def make_scheduler(name: str = "ddim", betas: BetaSchedule = ANIMATEDIFF_BETAS):
    """A diffusers scheduler with the motion module's betas (AnimateDiff's linear ones unless told) and
    ``steps_offset=1``."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
    )

    common = {"beta_start": betas.start, "beta_end": betas.end, "beta_schedule": betas.kind, "steps_offset": 1}
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, **common)
    if name == "euler":
        return EulerDiscreteScheduler(**common)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler(**common)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)
    raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")


@dataclass
class SamplingSettings:
    frames: int = 16
    steps: int = 25
    guidance: float = 7.5
    t0: float = 1.0
    p: float = OFFICIAL_P
    blur_sigma: float = OFFICIAL_BLUR_SIGMA
    seed: int = 42
    # Frames per UNet call (the motion module's window); None: all frames in one call.
    context_length: int | None = None
    context_overlap: int = 4


# ---------------------------------------------------------------- encoding


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def encode_image(vae, image, device, dtype) -> torch.Tensor:
    """z0 = posterior mean * scaling factor, (1, C, h, w): deterministic, unlike the official sample."""
    pixels = image_to_tensor(image).to(device=device, dtype=vae.dtype)
    with torch.no_grad():
        mean = vae.encode(pixels).latent_dist.mean
    return (mean * vae.config.scaling_factor).to(dtype)


def decode_latents(vae, latents: torch.Tensor, batch: int = 4) -> list[np.ndarray]:
    """(1, C, F, h, w) latents -> F uint8 RGB frames, decoded a few at a time."""
    frames = latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor
    images = []
    with torch.no_grad():
        for start in range(0, frames.shape[0], batch):
            decoded = vae.decode(frames[start:start + batch].to(vae.dtype)).sample
            decoded = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            images.extend(decoded.permute(0, 2, 3, 1).cpu().numpy())
    return images


# ---------------------------------------------------------------- schedule and init


def truncated_timesteps(scheduler, steps: int, t0: float, device) -> torch.Tensor:
    """The schedule's last ``int(steps * t0)`` timesteps (img2img truncation); t0 = 1 keeps them all."""
    if not 0.0 < t0 <= 1.0:
        raise ValueError(f"t0 must be in (0, 1], got {t0}")
    scheduler.set_timesteps(steps, device=device)
    kept = max(1, min(int(steps * t0), steps))
    start = (steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def initial_latents(z0: torch.Tensor, settings: SamplingSettings, scheduler, t_start: torch.Tensor,
                    generator: torch.Generator, z_last: torch.Tensor | None = None) -> torch.Tensor:
    """(1, C, F, h, w): frame 0 = z0, frames 1.. = FSP prior noised to ``t_start``; with ``z_last`` (a video
    that ends on a picture) the last frame is z_last and the frames between start from both priors mixed.

    The prior's mask and the noise come from the seeded CPU generator, so a seed gives the same
    video on every device.
    """
    frames = settings.frames
    if z_last is None:
        prior = frame_similarity_prior(z0[0].float().cpu(), frames, settings.p, settings.blur_sigma,
                                       generator=generator)
    else:
        prior = keyframe_prior(z0[0].float().cpu(), z_last[0].float().cpu(), frames, settings.p, settings.blur_sigma,
                               generator=generator)
    latents = prior.clone()
    if frames > 1:
        noise = torch.randn(prior[1:].shape, generator=generator)
        latents[1:] = scheduler.add_noise(prior[1:], noise, t_start.cpu().repeat(frames - 1))
    latents[0] = z0[0].float().cpu()
    if z_last is not None:
        latents[-1] = z_last[0].float().cpu()
    return latents.permute(1, 0, 2, 3).unsqueeze(0).to(device=z0.device, dtype=z0.dtype)


# ---------------------------------------------------------------- context windows


def _guided_rows(added_cond: dict, use_cfg: bool) -> dict:
    """``[uncond, cond]`` rows of each added condition, or only the cond row without CFG."""
    def rows(value):
        return value if use_cfg else value[1:]

    return {name: [rows(item) for item in value] if isinstance(value, list) else rows(value)
            for name, value in added_cond.items()}


def predict_noise(unet, model_input: torch.Tensor, t, embeddings: torch.Tensor, guidance: float,
                  windows: list[list[int]], layout: FrameLayout | None,
                  image_embeds: torch.Tensor | None = None, added_cond: dict | None = None) -> torch.Tensor:
    """CFG noise prediction for all frames, window by window, averaged where windows overlap.

    ``model_input``: (1, C, F, h, w). With CFG the UNet batch is [uncond, cond]. ``image_embeds``:
    ``[uncond, cond]`` IP-Adapter image features (one row per batch item; the UNet repeats them per frame).
    ``added_cond``: further ``added_cond_kwargs`` with ``[uncond, cond]`` rows (SDXL's ``text_embeds`` and
    ``time_ids``), repeated per frame by the UNet like the image features.
    """
    use_cfg = guidance > 1.0  # as diffusers and the official code: at 1 or below the uncond half is not run
    context = embeddings if use_cfg else embeddings[1:]
    added = dict(added_cond or {})
    if image_embeds is not None:
        added["image_embeds"] = [image_embeds]
    extra = {"added_cond_kwargs": _guided_rows(added, use_cfg)} if added else {}
    total = torch.zeros_like(model_input)
    counts = torch.zeros(model_input.shape[2], device=model_input.device, dtype=model_input.dtype)

    def window_prediction(window):
        if layout is not None:
            layout.set_window(Window.from_frames(window, layout.last_frame))
        x = model_input[:, :, window]
        x = torch.cat([x, x]) if use_cfg else x
        # diffusers' motion UNet takes one context row per frame (batch-major, like the sample's rows).
        rows = context.repeat_interleave(len(window), dim=0)
        return unet(x, t, encoder_hidden_states=rows, **extra).sample

    prime = layout.priming_window(windows) if layout is not None else None
    if prime is not None:  # its result is dropped: it only stores the last keyframe's keys/values
        with layout.priming():
            window_prediction(prime)
    for window in windows:
        prediction = window_prediction(window)
        if use_cfg:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance * (cond - uncond)
        total[:, :, window] += prediction
        counts[window] += 1
    return total / counts.view(1, 1, -1, 1, 1)


def sample_video_latents(unet, scheduler, z0: torch.Tensor, embeddings: torch.Tensor, settings: SamplingSettings,
                         layout: FrameLayout | None = None, progress=None,
                         image_embeds: torch.Tensor | None = None, added_cond: dict | None = None,
                         z_last: torch.Tensor | None = None) -> torch.Tensor:
    """Run the loop; returns (1, C, F, h, w) latents whose frame 0 is exactly z0 (and the last frame z_last).

    ``layout``: the :class:`FrameLayout` the installed :class:`FirstFrameHooks` read (None without hooks).
    ``progress``: a callable wrapping the timestep iterable (e.g. tqdm).
    ``image_embeds``: IP-Adapter image features, with an installed ``IPAdapterPatch``.
    ``added_cond``: SDXL's added conditioning, ``[uncond, cond]`` rows (see :func:`predict_noise`).
    ``z_last``: the last keyframe's latent, (1, C, h, w): the video ends exactly on it.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    timesteps = truncated_timesteps(scheduler, settings.steps, settings.t0, z0.device)
    latents = initial_latents(z0, settings, scheduler, timesteps[:1], generator, z_last)
    last = settings.frames - 1 if z_last is not None else None
    windows = frame_zero_windows_first(context_windows(settings.frames, settings.context_length,
                                                       settings.context_overlap), last)
    step_generator = torch.Generator(device=z0.device).manual_seed(settings.seed + 1)
    clean = z0[:, :, None]
    clean_last = z_last[:, :, None].to(latents) if z_last is not None else None
    end = settings.frames - 1 if z_last is not None else settings.frames  # the frames the scheduler steps: 1..end-1
    iterator = progress(timesteps) if progress is not None else timesteps
    for step, t in enumerate(iterator):
        if layout is not None:
            layout.begin_step(step)
        # The UNet sees exactly the keyframes, whatever input scaling the scheduler applies.
        model_input = scheduler.scale_model_input(latents.clone(), t)
        model_input[:, :, :1] = clean
        if clean_last is not None:
            model_input[:, :, -1:] = clean_last
        with torch.no_grad():
            noise = predict_noise(unet, model_input, t, embeddings, settings.guidance, windows, layout,
                                  image_embeds, added_cond)
        # The keyframes are never stepped: the scheduler only ever sees the frames between (multistep state included).
        stepped = scheduler.step(noise[:, :, 1:end], t, latents[:, :, 1:end], generator=step_generator).prev_sample
        latents = torch.cat([clean, stepped.to(latents.dtype)] + ([clean_last] if clean_last is not None else []), dim=2)
    return latents
