"""Validation videos: the current adapter animates a held-out image through the standalone pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..weights.adapter import AdapterWeights
from .clips import Clip
from .decode import UnusableClip, read_clip, resize_center_crop
from .settings import TrainSettings


@dataclass
class ValidationInput:
    image: Image.Image
    prompt: str
    source: str


def choose_validation_input(settings: TrainSettings, clips: list[Clip],
                            decoder: str) -> tuple[ValidationInput, list[Clip]]:
    """``--validation-image`` (centre-cropped), or frame 0 of the first usable clip, which then leaves training.

    Returns the input and the clips left for training.
    """
    if settings.validation_image:
        frame = np.asarray(Image.open(settings.validation_image).convert("RGB"))
        image = Image.fromarray(resize_center_crop(frame, settings.resolution))
        return ValidationInput(image, settings.validation_prompt or "", settings.validation_image), clips
    rng = np.random.default_rng(settings.seed)
    for index, clip in enumerate(clips):
        try:
            frames = read_clip(clip.path, settings.frames, settings.stride, settings.resolution, rng, decoder)
        except UnusableClip:
            continue
        rest = clips[:index] + clips[index + 1:]
        if not rest:
            break
        prompt = settings.validation_prompt if settings.validation_prompt is not None else clip.caption
        return ValidationInput(Image.fromarray(frames[0]), prompt, clip.path), rest
    raise ValueError("--validate-every needs --validation-image or at least two usable videos (one is held out)")


def write_validation_video(parts, weights: AdapterWeights, chosen: ValidationInput, settings: TrainSettings,
                           step: int) -> Path:
    """Sample with the pipeline's own generation (its hooks, its loop) and write an mp4 beside the checkpoints."""
    import torch

    from ..pipeline.generate import GenerationRequest, generate
    from ..pipeline.sampling import SamplingSettings
    from ..pipeline.video import write_video

    sampling = SamplingSettings(frames=settings.frames, steps=settings.validation_steps, seed=settings.seed)
    request = GenerationRequest(chosen.image, chosen.prompt, settings=sampling, adapter=weights)
    was_training = parts.unet.training
    parts.unet.eval()
    try:
        with torch.no_grad():
            result = generate(parts, request)
    finally:
        parts.unet.train(was_training)
    out = settings.checkpoints_folder / f"validation-{step:06d}.mp4"
    return write_video(result.frames, out)
