"""One image-to-video generation: load, hook, sample, decode, colour-match, write."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import torch
from PIL import Image

from ..color import match_video_colors
from ..hooks import FirstFrameHooks
from ..image_input import to_rgb8
from ..layout import FrameLayout
from .ip_adapter import encode_ip_image
from .loading import ModelParts
from .sampling import SamplingSettings, context_windows, decode_latents, encode_image, make_scheduler, \
    sample_video_latents
from .text_conditioning import TextConditioning

OFFICIAL_SHORT_SIDE = 512
OFFICIAL_MULTIPLE = 64


def official_size(width: int, height: int, short_side: int = OFFICIAL_SHORT_SIDE,
                  multiple: int = OFFICIAL_MULTIPLE) -> tuple[int, int]:
    """The official resize: short side to ``short_side``, each side rounded to a multiple of 64."""
    scale = short_side / min(width, height)
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def prepare_image(image: Image.Image, width: int | None = None, height: int | None = None,
                  short_side: int = OFFICIAL_SHORT_SIDE) -> Image.Image:
    image = to_rgb8(image)
    if width is None or height is None:
        width, height = official_size(*image.size, short_side)
    return image.resize((width, height), Image.LANCZOS) if image.size != (width, height) else image


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class GenerationRequest:
    image: Image.Image
    prompt: str
    negative_prompt: str = ""
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    scheduler: str = "ddim"
    adapter: object | None = None          # AdapterWeights, or None
    adapter_scale: float = 1.0
    training_free: bool = False             # hooks without trained weights when no adapter is given
    color_match: bool = True
    ip_adapter_scale: float = 1.0           # used when the parts carry an IP-Adapter (official: 1.0)
    last_image: Image.Image | None = None   # the video ends exactly on it (resized to ``image``'s size)
    loop: bool = False                      # the video ends on ``image`` again


@dataclass
class GenerationResult:
    frames: list
    latents: torch.Tensor
    z0: torch.Tensor
    hook_stats: dict


def last_keyframe_latent(vae, request: GenerationRequest, z0: torch.Tensor, device, dtype) -> torch.Tensor | None:
    """The latent the video ends on: the last picture's at the first picture's size, z0 for a loop, or None."""
    if request.loop and request.last_image is not None:
        raise ValueError("a loop ends on the first picture: give --loop or --last-image, not both")
    if request.loop:
        return z0
    if request.last_image is None:
        return None
    return encode_image(vae, prepare_image(request.last_image, *request.image.size), device, dtype)


def move_parts(parts: ModelParts, device: torch.device, dtype: torch.dtype) -> None:
    modules = [parts.unet, parts.vae, parts.text_encoder]
    if parts.second_text is not None:
        modules.append(parts.second_text[1])
    if parts.ip_adapter is not None:
        modules.append(parts.ip_adapter.encoder.model)
    for module in modules:
        # torch's own `to`: diffusers' override warns on every dtype cast (even with no fp32-only modules), and
        # these models are never quantized or offloaded, the cases its override handles.
        torch.nn.Module.to(module, device=device, dtype=dtype)


def generate(parts: ModelParts, request: GenerationRequest, device: torch.device | None = None,
             progress=None) -> GenerationResult:
    """Animate ``request.image``; the models must already be on ``device`` in their run dtype."""
    device = device or next(parts.unet.parameters()).device
    dtype = next(parts.unet.parameters()).dtype
    settings = request.settings
    if settings.context_length is None and settings.frames > parts.motion_max_frames:
        settings = replace(settings, context_length=parts.motion_max_frames)
    windows = context_windows(settings.frames, settings.context_length, settings.context_overlap)

    # SD1.5: CLIP's last hidden states; SDXL: both encoders, with pooled embeds and size ids as added conditioning.
    width, height = request.image.size
    embeddings, added_cond = TextConditioning.of_parts(parts).encode(
        [request.negative_prompt, request.prompt], device, dtype, size=(height, width))
    z0 = encode_image(parts.vae, request.image, device, dtype)
    z_last = last_keyframe_latent(parts.vae, request, z0, device, dtype)
    if z_last is not None and settings.frames < 3:
        raise ValueError(f"a video that ends on a picture (--last-image or --loop) needs at least 3 frames, "
                         f"got {settings.frames}")
    last_frame = settings.frames - 1 if z_last is not None else None
    use_hooks = request.adapter is not None or request.training_free
    layout = (FrameLayout(len(windows[0]), 0, keep_reference=len(windows) > 1, last_frame=last_frame)
              if use_hooks else None)
    image_embeds = None
    with ExitStack() as patches:
        if parts.ip_adapter is not None:
            # The content adapter sits on attn2, the first-frame hooks on attn1: independent patches.
            ip_adapter = parts.ip_adapter
            ip_adapter.patch.scale = request.ip_adapter_scale
            patches.enter_context(ip_adapter.patch)
            image_embeds = encode_ip_image(ip_adapter.encoder, ip_adapter.weights.variant, request.image, device, dtype)
        if use_hooks:
            patches.enter_context(FirstFrameHooks(parts.unet, layout, request.adapter, request.adapter_scale))
        latents = sample_video_latents(parts.unet, make_scheduler(request.scheduler, parts.betas), z0, embeddings, settings,
                                       layout, progress, image_embeds, added_cond, z_last)
    frames = decode_latents(parts.vae, latents)
    if request.color_match:
        frames = match_video_colors(frames, ends_on_last=z_last is not None)
    return GenerationResult(frames, latents, z0, dict(layout.stats) if layout else {})
