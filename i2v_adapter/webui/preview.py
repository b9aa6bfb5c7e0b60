"""The panel's Preview button: the prior of the current image, with the loaded model's VAE.

Only the VAE access lives here; the picture is made by :mod:`i2v_adapter.prior_preview`. The image is
resized and encoded exactly as a generation does (the posterior mean at img2img's size and resize mode),
so the preview shows the prior frame 1 of a generation with the same seed starts from.
"""
from __future__ import annotations

import html
import logging
import time
from types import SimpleNamespace

import torch

from ..image_input import ImageInputError, picture_from_value, to_rgb8
from ..motion.schedule import ANIMATEDIFF_BETAS, ANIMATEDIFF_SDXL_BETAS, BetaSchedule
from ..prior_preview import animatediff_alphas_cumprod, preview_prior

log = logging.getLogger("i2v_adapter")

NO_IMAGE = "Put a picture in this panel or as the img2img picture, then press Preview."
TXT2IMG_NOTE = ("The prior applies in img2img only: in txt2img frames 1.. start from pure noise, so there is "
                "nothing to preview here.")


def _size(value, fallback: int) -> int:
    try:
        return max(64, int(value) // 8 * 8)
    except (TypeError, ValueError):
        return fallback


def encoder(sd_model, width: int, height: int, resize_mode: int):
    """Image -> z0 as the generation computes it (resize as img2img does, posterior mean, scaled)."""
    from . import host

    if host.host() == host.NEW_FORGE:
        from .forge2.generation import encode_posterior_mean
    else:
        from .generation import encode_posterior_mean

    def encode(image):
        request = SimpleNamespace(sd_model=sd_model, width=width, height=height, resize_mode=resize_mode,
                                  init_images=[image])
        return encode_posterior_mean(request, image)

    return encode


def decoder(sd_model):
    """Latents -> pixels in [-1, 1], decoded as the WebUI decodes its results (Settings: VAE type for decode)."""
    from modules import devices, sd_samplers_common

    def decode(latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(devices.device)
        with devices.autocast():
            if hasattr(sd_samplers_common, "decode_first_stage"):
                pixels = sd_samplers_common.decode_first_stage(sd_model, latents)
            else:
                pixels = sd_samplers_common.samples_to_images_tensor(latents, 0, sd_model)
        return pixels.float().cpu()

    return decode


def motion_schedule(sd_model) -> BetaSchedule:
    """The noise schedule the video will sample with: AnimateDiff-SDXL's scaled-linear betas with an SDXL
    checkpoint (as sd-webui-animatediff sets them; HotShot-XL keeps the linear ones), the linear betas of the
    SD1.5 motion modules otherwise."""
    return ANIMATEDIFF_SDXL_BETAS if getattr(sd_model, "is_sdxl", False) else ANIMATEDIFF_BETAS


def loaded_model():
    """The checkpoint's model; Forge 2 loads it only for the first generation, so load it here if needed."""
    from modules import sd_models, shared

    reload = getattr(sd_models, "forge_model_reload", None)
    if reload is not None:
        model = reload()
        return model[0] if isinstance(model, tuple) else model
    return shared.sd_model


def caption_html(text: str, kind: str = "note") -> str:
    return f"<p class='i2v-adapter-preview-{kind}'>{html.escape(text)}</p>"


def run(panel_image, img2img_image, t0, p, blur_sigma, seed, width=None, height=None, resize_mode=0):
    """Click handler: (prior thumbnail, noised thumbnail, caption). Never raises: the caption says what is wrong."""
    try:
        image = picture_from_value(panel_image) or picture_from_value(img2img_image)
    except ImageInputError as error:
        return None, None, caption_html(str(error), "error")
    if image is None:
        return None, None, caption_html(NO_IMAGE, "error")
    image = to_rgb8(image)
    seed = int(seed) if seed is not None and int(seed) >= 0 else 0
    width, height = _size(width, image.width // 8 * 8 or 512), _size(height, image.height // 8 * 8 or 512)
    try:
        sd_model = loaded_model()
        started = time.perf_counter()
        schedule = motion_schedule(sd_model)
        preview = preview_prior(image, encoder(sd_model, width, height, int(resize_mode or 0)), decoder(sd_model),
                                float(t0), float(p), float(blur_sigma), seed, animatediff_alphas_cumprod(schedule))
        elapsed = time.perf_counter() - started
    except Exception as error:  # the model is missing or loading; say so, keep the page usable
        log.warning("I2V-Adapter preview failed: %s", error)
        return None, None, caption_html(f"Preview failed: {error}", "error")
    schedule_note = " AnimateDiff-SDXL's noise schedule." if schedule == ANIMATEDIFF_SDXL_BETAS else ""
    return preview.prior, preview.noised, caption_html(
        f"{preview.caption()} {width}x{height}, seed {seed}, {elapsed:.1f} s.{schedule_note}")
