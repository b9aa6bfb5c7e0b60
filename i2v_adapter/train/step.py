"""One micro-batch: encode, noise all frames but frame 0, predict, and the loss over frames 1.."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .recipe.objective import (
    Draws,
    captions_after_dropout,
    draw,
    encode_video,
    first_frame_free_loss,
    noisy_video,
    per_frame_rows,
)


@dataclass
class BatchLoss:
    loss: torch.Tensor
    prediction: torch.Tensor    # (B, C, F, h, w): the UNet's output, frame 0 included
    model_input: torch.Tensor   # (B, C, F, h, w): frame 0 clean, frames 1.. noised
    draws: Draws


def first_frame_tokens(ip_adapter, pixels: torch.Tensor, keep_image: torch.Tensor, device, dtype) -> torch.Tensor:
    """IP-Adapter features of each clip's frame 0, (B, 1, tokens, width); dropped ones get the unconditional."""
    from ..pipeline.ip_adapter import encode_ip_image

    rows = []
    for frame, keep in zip(pixels[:, 0], keep_image.tolist()):
        image = Image.fromarray(frame.permute(1, 2, 0).cpu().numpy())
        uncond, cond = encode_ip_image(ip_adapter.encoder, ip_adapter.weights.variant, image, device, dtype)
        rows.append(cond if keep else uncond)
    return torch.stack(rows)


def batch_loss(model, parts, conditioning, batch: dict, noise_scheduler, seed: int, text_dropout: float,
               image_dropout: float, device, dtype) -> BatchLoss:
    """``model``: the (possibly DDP-wrapped) :class:`FirstFrameAdapter`; ``parts``: the pipeline's models;
    ``conditioning``: a :class:`TextConditioning`."""
    latents = encode_video(parts.vae, batch["pixels"].to(device))
    frames = latents.shape[2]
    noise_shape = (latents.shape[1], frames - 1, *latents.shape[3:])
    draws = draw(batch["samples"], seed, noise_shape, text_dropout, image_dropout)
    context, added = conditioning.encode(captions_after_dropout(batch["captions"], draws.keep_text), device, dtype)
    if parts.ip_adapter is not None:
        added["image_embeds"] = [first_frame_tokens(parts.ip_adapter, batch["pixels"], draws.keep_image, device,
                                                     dtype)]
    model_input = noisy_video(latents, draws, noise_scheduler)
    prediction = model(parts.unet, model_input, draws.timesteps.to(device), per_frame_rows(context, frames),
                       added or None)
    return BatchLoss(first_frame_free_loss(prediction, draws.noise), prediction, model_input, draws)
