"""Load the parts of a text-to-video model from local files (or, if asked, a hub id).

Base model: a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, and for SDXL
``text_encoder_2/``, ``tokenizer_2/``; plain or fp16-variant weights), a single-file SD1.5 checkpoint
(``single_file``; its tokenizer from ``tokenizer_dir`` or else the hub cache), or a hub id. Only a hub id
and a missing tokenizer touch the network. Motion module: the original AnimateDiff layout, a diffusers
``MotionAdapter`` file, or the official ipplus whole-UNet file, whose spatial UNet tensors then replace the
base UNet's and whose IP-Adapter K/V serve the IP-Adapter (its image projection comes from an h94 file, as in
the official code). Optional IP-Adapter: an h94 file and a CLIP vision model folder.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..motion.schedule import ANIMATEDIFF_BETAS, BetaSchedule
from ..weights.adapter import WeightsError
from ..weights.ip_adapter import IPLayerKV, ipplus_layer_kv, read_ip_adapter_file
from ..weights.reading import read_file
from .hub_files import CLIP_TOKENIZER, fetch
from .ip_adapter import IPAdapterParts, IPAdapterPatch, check_encoder_fits, check_ip_arguments, choose_ip_adapter, \
    load_image_encoder
from ..motion.diffusers_layout import DEFAULT_HEADS, DEFAULT_NORM_GROUPS, is_motion_key, motion_adapter_from_state_dict, \
    motion_betas, strip_prefixes
from .single_file import load_single_file
from .text_conditioning import is_sdxl, load_second_text_encoder

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
    second_text: tuple | None = None   # SDXL's (tokenizer_2, text_encoder_2)
    betas: BetaSchedule = ANIMATEDIFF_BETAS  # the noise schedule the motion module was trained with


def _is_hub_id(text: str) -> bool:
    return not Path(text).exists() and text.count("/") == 1 and not text.startswith((".", "/"))


# Weight files of a diffusers folder without a variant; the hub's fp16 files are named ``*.fp16.*``.
_PLAIN_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                  "pytorch_model.bin")


def _weights_variant(subfolder: Path) -> str | None:
    """``"fp16"`` for a part that holds only fp16-variant weights (as the default download does)."""
    if not subfolder.is_dir() or any((subfolder / name).exists() for name in _PLAIN_WEIGHTS):
        return None
    return "fp16" if any(".fp16." in path.name for path in subfolder.iterdir()) else None


def _load_diffusers_folder(source: str, local_files_only: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def part(cls, subfolder: str):
        variant = _weights_variant(Path(source) / subfolder) if local_files_only else None
        return cls.from_pretrained(source, subfolder=subfolder, variant=variant, local_files_only=local_files_only)

    unet = part(UNet2DConditionModel, "unet")
    vae = part(AutoencoderKL, "vae")
    text_encoder = part(CLIPTextModel, "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_files_only)
    return unet, vae, text_encoder, tokenizer


def load_base_model(checkpoint: str, tokenizer_dir: str | None = None):
    """``(unet2d, vae, text_encoder, tokenizer)`` from a diffusers folder, a single SD1.5 file or a hub id."""
    if Path(checkpoint).is_dir():
        return _load_diffusers_folder(checkpoint, local_files_only=True)
    if Path(checkpoint).is_file():
        # The file holds CLIP's weights but not its vocabulary: without a folder the tokenizer comes from
        # the hub cache (fetched once), as diffusers' own single-file loading does.
        return load_single_file(checkpoint, tokenizer_dir or str(fetch([CLIP_TOKENIZER])[0]))
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


@contextmanager
def _diffusers_errors_only():
    """``from_unet2d`` casts with ``to(dtype)``, on which diffusers warns that an empty list of modules should
    stay in float32: noise on every run."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


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
    # diffusers' from_unet2d copies block by block into a second full-size model (twice the UNet's memory while
    # loading) and leaves SDXL's add_embedding (pooled text and size ids) at its random init. So: an empty
    # model, given the 2D UNet's own tensors and the motion module's, every key checked.
    with torch.device("meta"), _diffusers_errors_only():
        unet = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)
    unet.load_state_dict({**unet2d.state_dict(), **adapter.state_dict()}, strict=True, assign=True)
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
    second_text = None
    if is_sdxl(unet2d):
        second_text = load_second_text_encoder(checkpoint, _weights_variant(Path(checkpoint) / "text_encoder_2"))
    unet, max_frames, notes = load_motion_unet(unet2d, motion_tensors, motion_heads, motion_norm_groups)
    ip_parts = IPAdapterParts(ip_weights, encoder, IPAdapterPatch(unet, ip_weights)) if encoder else None
    return ModelParts(unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, max_frames, notes + ip_notes, ip_parts,
                      second_text, motion_betas(motion_tensors, second_text is not None))
