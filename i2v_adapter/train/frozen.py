"""The frozen models of a run: loaded by the pipeline, cast, and wearing the training branch while it runs."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .recipe.model import TrainingHooks
from .settings import TrainSettings


def load_frozen(settings: TrainSettings, notes: list[str]):
    """The pipeline's :class:`ModelParts` for the run's base model, motion module and IP-Adapter."""
    from ..pipeline.loading import load_model_parts

    parts = load_model_parts(settings.checkpoint, settings.motion_module, settings.tokenizer, settings.motion_heads,
                             settings.motion_norm_groups, settings.ip_adapter, settings.image_encoder)
    notes.extend(parts.notes)
    if settings.frames > parts.motion_max_frames:
        raise ValueError(f"--frames {settings.frames} is more than the motion module's {parts.motion_max_frames}")
    return parts


def freeze(parts, conditioning, device, dtype) -> None:
    """No gradients, eval mode, on ``device``; in ``dtype`` except the VAE (fp16 VAEs overflow; it only encodes)."""
    for module in (parts.unet, parts.vae, *conditioning.modules):
        module.requires_grad_(False).eval()
    modules = [parts.unet, *conditioning.modules] + ([parts.ip_adapter.encoder.model] if parts.ip_adapter else [])
    for module in modules:
        module.to(device)
        if dtype != torch.float32:  # asked only when needed: diffusers warns about any dtype cast
            module.to(dtype)
    parts.vae.to(device)
    if parts.ip_adapter is not None:
        parts.ip_adapter.encoder.model.requires_grad_(False).eval()


def _ip_patch(parts):
    return parts.ip_adapter.patch if parts.ip_adapter is not None else None


def _put_on(parts, hooks: TrainingHooks) -> None:
    patch = _ip_patch(parts)
    if patch is not None:
        patch.install()
        parts.unet.requires_grad_(False)  # the IP-Adapter's processors are new modules: frozen too
    hooks.install()


def _take_off(parts, hooks: TrainingHooks) -> None:
    hooks.remove()
    if (patch := _ip_patch(parts)) is not None:
        patch.remove()


@contextmanager
def branches_on(parts, hooks: TrainingHooks):
    """The training branch (and the frozen IP-Adapter) on the UNet for the run; off again whatever happens."""
    try:
        _put_on(parts, hooks)
        yield
    finally:
        _take_off(parts, hooks)


@contextmanager
def branches_off(parts, hooks: TrainingHooks):
    """For validation: the pipeline's generation installs its own branch (and IP-Adapter)."""
    _take_off(parts, hooks)
    try:
        yield
    finally:
        _put_on(parts, hooks)
