"""Load the parts of a text-to-video model from local files (or, if asked, a hub id).

Base model: a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``), a single-file
SD1.5 checkpoint (ldm keys; the configs are SD1.5's ``v1-inference`` geometry, built here, and the
tokenizer comes from ``tokenizer_dir`` because a tokenizer's vocabulary cannot be built from constants),
or a hub id (the only case that touches the network). Motion module: the original AnimateDiff layout,
a diffusers ``MotionAdapter`` file, or the official ipplus whole-UNet file, whose spatial UNet tensors
then replace the base UNet's and whose IP-Adapter K/V serve the IP-Adapter (its image projection comes
from an h94 file, as in the official code). Optional IP-Adapter: an h94 file and a CLIP vision model folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..weights.adapter import WeightsError
from ..weights.ip_adapter import IPLayerKV, ipplus_layer_kv, read_ip_adapter_file
from ..weights.reading import read_file
from .ip_adapter import IPAdapterParts, IPAdapterPatch, check_encoder_fits, check_ip_arguments, choose_ip_adapter, \
    load_image_encoder
from .motion_module import DEFAULT_HEADS, DEFAULT_NORM_GROUPS, is_motion_key, motion_adapter_from_state_dict, \
    strip_prefixes

# SD1.5 (v1-inference.yaml) geometry, for single-file checkpoints.
SD15_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD15_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "scaling_factor": 0.18215,
}
SD15_TEXT_CONFIG = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}

# Keys of an ipplus file that are not plain UNet2DConditionModel tensors.
_IP_KV = (".attn2.to_k_ip.", ".attn2.to_v_ip.")
_ADAPTER = (".attn1.to_q_ff.", ".attn1.to_out_ff.")


@dataclass
class ModelParts:
    unet: torch.nn.Module          # UNetMotionModel
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    motion_max_frames: int
    # What the loader did and did not use, for the user: e.g. where the IP-Adapter K/V came from.
    notes: list[str] = field(default_factory=list)
    ip_adapter: IPAdapterParts | None = None


def _is_hub_id(text: str) -> bool:
    return not Path(text).exists() and text.count("/") == 1 and not text.startswith((".", "/"))


def _load_diffusers_folder(source: str, local_files_only: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    common = {"local_files_only": local_files_only}
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **common)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **common)
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **common)
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
    return unet, vae, text_encoder, tokenizer


def _load_state(model: torch.nn.Module, state_dict: dict, what: str, ignore=("position_ids",)) -> None:
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(ignore)}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise WeightsError(f"the checkpoint's {what} does not fit SD1.5: missing {missing[:5]} ({len(missing)}), "
                           f"unexpected {unexpected[:5]} ({len(unexpected)})")


def _fit_text_model_prefix(state_dict: dict, model: torch.nn.Module, prefix: str = "text_model.") -> dict:
    """Checkpoints name CLIP's weights with or without ``text_model.``; so do transformers versions."""
    wants_prefix = any(key.startswith(prefix) for key in model.state_dict())
    fitted = {}
    for key, value in state_dict.items():
        bare = key[len(prefix):] if key.startswith(prefix) else key
        fitted[prefix + bare if wants_prefix else bare] = value
    return fitted


def _load_single_file(path: str, tokenizer_dir: str | None):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if tokenizer_dir is None:
        raise WeightsError("a single-file checkpoint needs --tokenizer DIR (a CLIP tokenizer folder, e.g. the "
                           "tokenizer/ of any SD1.5 diffusers folder); or give a diffusers folder as --checkpoint")
    checkpoint = read_file(path).tensors
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    _load_state(unet, convert_ldm_unet_checkpoint(checkpoint, unet.config), "UNet")
    vae = AutoencoderKL(**SD15_VAE_CONFIG)
    _load_state(vae, convert_ldm_vae_checkpoint(checkpoint, vae.config), "VAE")
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    _load_state(text_encoder, _fit_text_model_prefix(convert_ldm_clip_checkpoint(checkpoint), text_encoder),
                "text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    return unet, vae, text_encoder, tokenizer


def load_base_model(checkpoint: str, tokenizer_dir: str | None = None):
    """``(unet2d, vae, text_encoder, tokenizer)`` from a diffusers folder, a single SD1.5 file or a hub id."""
    if Path(checkpoint).is_dir():
        return _load_diffusers_folder(checkpoint, local_files_only=True)
    if Path(checkpoint).is_file():
        return _load_single_file(checkpoint, tokenizer_dir)
    if _is_hub_id(checkpoint):
        return _load_diffusers_folder(checkpoint, local_files_only=False)
    raise WeightsError(f"{checkpoint}: no such file or folder")


def apply_ipplus_unet(unet2d: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Copy an ipplus file's spatial UNet tensors into ``unet2d``; returns notes on what was done.

    Its IP-Adapter K/V are read by :func:`ipplus_layer_kv` and its adapter tensors by ``--adapter``.
    """
    spatial, adapter = {}, 0
    for key, tensor in tensors.items():
        key = strip_prefixes(key)
        if is_motion_key(key) or any(part in key for part in _IP_KV):
            continue
        if any(part in key for part in _ADAPTER):
            adapter += 1
        else:
            spatial[key] = tensor
    expected = unet2d.state_dict()
    unexpected = sorted(set(spatial) - set(expected))
    if unexpected:
        raise WeightsError(f"the motion-module file holds UNet keys this UNet lacks: {unexpected[:5]} "
                           f"({len(unexpected)})")
    unet2d.load_state_dict({k: v.to(expected[k].dtype) for k, v in spatial.items()}, strict=False)
    notes = [f"replaced {len(spatial)} of the base UNet's {len(expected)} tensors with the ipplus file's"]
    if adapter:
        notes.append(f"{adapter} adapter tensors in the same file (pass the file as --adapter to use them)")
    return notes


def load_motion_unet(unet2d: torch.nn.Module, motion_module, heads: int = DEFAULT_HEADS,
                     norm_groups: int = DEFAULT_NORM_GROUPS):
    """``(UNetMotionModel, frame limit, notes)`` from a 2D UNet and a motion-module file (any layout).

    ``motion_module``: a path, or the file's tensors already read.
    """
    from diffusers import UNetMotionModel

    tensors = motion_module if isinstance(motion_module, dict) else read_file(motion_module).tensors
    notes = []
    if any(not is_motion_key(key) for key in tensors):
        notes = apply_ipplus_unet(unet2d, tensors)
    adapter = motion_adapter_from_state_dict(tensors, heads, norm_groups)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    return unet, adapter.config.motion_max_seq_length, notes


def load_model_parts(checkpoint: str, motion_module: str, tokenizer_dir: str | None = None,
                     motion_heads: int = DEFAULT_HEADS, motion_norm_groups: int = DEFAULT_NORM_GROUPS,
                     ip_adapter: str | None = None, image_encoder: str | None = None) -> ModelParts:
    """Load everything; the small files first, so that a bad one fails before the base model loads.

    ``ip_adapter``: an h94 IP-Adapter file; ``image_encoder``: its CLIP vision model folder. With an ipplus
    motion-module file, the IP-Adapter K/V come from that file and only the image projection from
    ``ip_adapter``, as in the official code.
    """
    check_ip_arguments(ip_adapter, image_encoder)
    ip_file = read_ip_adapter_file(ip_adapter) if ip_adapter else None
    motion_tensors = read_file(motion_module).tensors
    ipplus_kv: dict[str, IPLayerKV] = ipplus_layer_kv(motion_tensors, motion_module)
    ip_weights, ip_notes = choose_ip_adapter(ip_file, ipplus_kv, motion_module, image_encoder)
    encoder = None
    if ip_weights is not None:
        encoder = load_image_encoder(image_encoder)
        check_encoder_fits(ip_weights, encoder)
    unet2d, vae, text_encoder, tokenizer = load_base_model(checkpoint, tokenizer_dir)
    unet, max_frames, notes = load_motion_unet(unet2d, motion_tensors, motion_heads, motion_norm_groups)
    ip_parts = IPAdapterParts(ip_weights, encoder, IPAdapterPatch(unet, ip_weights)) if encoder else None
    return ModelParts(unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, max_frames, notes + ip_notes, ip_parts)
