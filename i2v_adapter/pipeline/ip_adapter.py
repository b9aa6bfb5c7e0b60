"""IP-Adapter on the input image (the paper's content adapter), with diffusers' own IP-Adapter classes.

The image goes through a CLIP vision model (``CLIPVisionModelWithProjection``, a local folder); plus reads
its penultimate hidden states, plain its image embedding. The unconditional half of CFG gets the encoding
of an all-zero image (plus, as the official code and diffusers) or zero embeddings (plain, as diffusers).
:class:`IPAdapterPatch` sets diffusers' ``IPAdapterAttnProcessor2_0`` on every cross-attention layer (attn2)
and the image projection as the UNet's ``encoder_hid_proj``, then puts everything back. The engine's
first-frame hooks sit on attn1 and are not touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..weights.adapter import WeightsError
from ..weights.ip_adapter import PLUS, PLUS_ENCODER_HINT, IPAdapterWeights, IPLayerKV, kv_for_layers, with_ipplus_kv
from ..weights.naming import is_temporal_path

_IP_IMAGE_PROJ = "ip_image_proj"


@dataclass
class ImageEncoder:
    model: nn.Module          # transformers CLIPVisionModelWithProjection
    processor: object         # CLIP image processor (resize, centre crop, normalise)
    folder: str


@dataclass
class IPAdapterParts:
    weights: IPAdapterWeights
    encoder: ImageEncoder
    patch: "IPAdapterPatch"   # checked against the UNet at load time; installed per generation


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def _image_processor_class():
    # transformers 5 names the Pillow implementation apart (the default one needs torchvision).
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:
        from transformers import CLIPImageProcessor as processor_class
    return processor_class


def load_image_encoder(folder) -> ImageEncoder:
    """A local CLIP vision model folder (``config.json`` + weights), e.g. h94's ``models/image_encoder``."""
    from transformers import CLIPVisionModelWithProjection

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise WeightsError(f"{folder} is not a CLIP vision model folder (no config.json); give {PLUS_ENCODER_HINT}")
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, ... for foreign folders
        raise WeightsError(f"{folder} is not a loadable CLIP vision model: {_one_line(error)}") from None
    processor_class = _image_processor_class()
    if (path / "preprocessor_config.json").is_file():
        processor = processor_class.from_pretrained(str(path), local_files_only=True)
    else:
        # h94's folder has no preprocessor config: CLIP's defaults (the official code's CLIPImageProcessor())
        # at the model's own input size (224 for ViT-H/14).
        side = model.config.image_size
        processor = processor_class(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return ImageEncoder(model.eval(), processor, str(folder))


def check_ip_arguments(ip_adapter, image_encoder) -> None:
    """The check that needs no file read: an IP-Adapter needs its image encoder."""
    if ip_adapter is not None and image_encoder is None:
        raise WeightsError(f"--ip-adapter needs --image-encoder DIR: the CLIP vision model, {PLUS_ENCODER_HINT}")


def choose_ip_adapter(ip_file: IPAdapterWeights | None, ipplus_kv: dict[str, IPLayerKV], motion_module: str,
                      image_encoder: str | None) -> tuple[IPAdapterWeights | None, list[str]]:
    """Which IP-Adapter to use, from the command's files: ``(weights or None, notes)``.

    The ipplus UNet (``motion_module``) has the K/V but no image projection, so it needs an h94 file for
    that; the official code pairs it with ``ip-adapter-plus_sd15.bin``. Both need the image encoder.
    """
    layers = len(ipplus_kv)
    if ip_file is None and image_encoder is None:
        unused = (f"{layers} IP-Adapter K/V layers in {motion_module} not used: pass --ip-adapter "
                  "ip-adapter-plus_sd15.bin and --image-encoder DIR to use them, as the official code does")
        return None, [unused] if layers else []
    check_ip_arguments(ip_file, image_encoder)
    if ip_file is None:
        if layers:
            raise WeightsError(
                f"{motion_module} holds the IP-Adapter's K/V but not its image projection (the Resampler): pass "
                "h94's ip-adapter-plus_sd15.bin as --ip-adapter for it"
            )
        raise WeightsError("--image-encoder needs --ip-adapter FILE (e.g. h94's ip-adapter-plus_sd15.bin)")
    if layers:
        weights, note = with_ipplus_kv(ip_file, ipplus_kv, motion_module)
        return weights, [note]
    if not ip_file.kv_count:
        raise WeightsError(f"{ip_file.source} holds an image projection but no K/V (ip_adapter.N.to_k_ip.weight)")
    return ip_file, []


def check_encoder_fits(weights: IPAdapterWeights, encoder: ImageEncoder) -> None:
    config = encoder.model.config
    width = config.hidden_size if weights.variant == PLUS else config.projection_dim
    if width != weights.image_feature_dim:
        feature = "hidden states" if weights.variant == PLUS else "image embeddings"
        raise WeightsError(
            f"{weights.source} reads image features of width {weights.image_feature_dim}, but the {feature} of "
            f"{encoder.folder} are {width} wide: use the image encoder the IP-Adapter was trained with "
            f"({PLUS_ENCODER_HINT})"
        )


def encode_ip_image(encoder: ImageEncoder, variant: str, image, device, dtype) -> torch.Tensor:
    """``[uncond, cond]`` image features, shape (2, 1, 257, hidden) for plus or (2, 1, dim) for plain."""
    pixels = encoder.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
    pixels = pixels.to(device=device, dtype=encoder.model.dtype)
    with torch.no_grad():
        if variant == PLUS:
            def penultimate(x):
                return encoder.model(x, output_hidden_states=True).hidden_states[-2]

            cond, uncond = penultimate(pixels), penultimate(torch.zeros_like(pixels))
        else:
            cond = encoder.model(pixels).image_embeds
            uncond = torch.zeros_like(cond)
    return torch.cat([uncond, cond]).unsqueeze(1).to(dtype)


def cross_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """The spatial cross-attention modules (``...transformer_blocks.N.attn2``) by diffusers path."""
    return {path: module for path, module in unet.named_modules()
            if path.endswith(".attn2") and not is_temporal_path(path) and ".motion_modules." not in f".{path}"}


def build_image_projection(unet: nn.Module, weights: IPAdapterWeights) -> nn.Module:
    """diffusers' Resampler (``IPAdapterPlusImageProjection``) or ``ImageProjection`` with the file's weights."""
    try:
        return unet._convert_ip_adapter_image_proj_to_diffusers(weights.image_proj, low_cpu_mem_usage=False)
    except (RuntimeError, KeyError, ValueError, IndexError) as error:
        raise WeightsError(
            f"{weights.source}: the image projection does not fit diffusers' IP-Adapter {weights.variant} layout: "
            f"{_one_line(error)}"
        ) from None


class IPAdapterPatch:
    """IP-Adapter processors on every attn2 of a diffusers UNet, and the image projection; removable.

    Construction checks the weights against the UNet and builds the image projection (one
    :class:`WeightsError` sentence if anything does not fit); ``install()`` / ``remove()`` or ``with``
    apply and undo. While installed, the UNet needs ``added_cond_kwargs={"image_embeds": [features]}``.
    ``scale`` is read at install time.
    """

    def __init__(self, unet: nn.Module, weights: IPAdapterWeights, scale: float = 1.0):
        self.unet = unet
        self.weights = weights
        self.scale = scale
        self.layers = cross_attention_layers(unet)
        if not self.layers:
            raise WeightsError("this UNet has no cross-attention layers for an IP-Adapter")
        self.kv = kv_for_layers(weights, {path: tuple(m.to_k.weight.shape) for path, m in self.layers.items()})
        context = {m.to_k.in_features for m in self.layers.values()}
        if context != {weights.output_dim}:
            raise WeightsError(
                f"{weights.source} makes image tokens {weights.output_dim} wide, this UNet's cross-attention reads "
                f"{'/'.join(map(str, sorted(context)))}: an IP-Adapter for another base model?"
            )
        self.projection = build_image_projection(unet, weights).eval()
        self._saved: dict | None = None

    def _processor(self, attention: nn.Module, path: str, device, dtype) -> nn.Module:
        from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

        processor = IPAdapterAttnProcessor2_0(
            hidden_size=attention.to_k.out_features, cross_attention_dim=attention.to_k.in_features,
            num_tokens=(self.weights.tokens,), scale=self.scale,
        )
        with torch.no_grad():
            processor.to_k_ip[0].weight.copy_(self.kv[path].key)
            processor.to_v_ip[0].weight.copy_(self.kv[path].value)
        return processor.to(device=device, dtype=dtype)

    def install(self) -> "IPAdapterPatch":
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        if self._saved is not None:
            return self
        parameter = next(self.unet.parameters())
        device, dtype = parameter.device, parameter.dtype
        projection = self.projection.to(device=device, dtype=dtype)
        processors = {path: self._processor(attention, path, device, dtype) for path, attention in self.layers.items()}
        self._saved = {
            "processors": {path: attention.processor for path, attention in self.layers.items()},
            "encoder_hid_proj": self.unet.encoder_hid_proj,
            "encoder_hid_dim_type": self.unet.config.encoder_hid_dim_type,
        }
        for path, attention in self.layers.items():
            attention.set_processor(processors[path])
        self.unet.encoder_hid_proj = MultiIPAdapterImageProjection([projection])
        self.unet.config.encoder_hid_dim_type = _IP_IMAGE_PROJ
        return self

    def remove(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        for path, attention in self.layers.items():
            attention.set_processor(saved["processors"][path])
        # Back to exactly what was there: a plain attribute when it was None, not a None child module.
        del self.unet.encoder_hid_proj
        self.unet.encoder_hid_proj = saved["encoder_hid_proj"]
        self.unet.config.encoder_hid_dim_type = saved["encoder_hid_dim_type"]

    @property
    def installed(self) -> bool:
        return self._saved is not None

    def __enter__(self) -> "IPAdapterPatch":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()
