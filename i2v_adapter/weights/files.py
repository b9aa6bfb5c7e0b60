"""Reading and writing adapter weight files.

Four layouts are accepted, told apart by their keys, never by the file name:

- ``official``: ``i2v_module.pth``, diffusers names ``<block>.transformer_blocks.0.attn1.to_q_ff.weight`` etc.
- ``ipplus``: a whole diffusers 3D UNet (``animatediff_v15_v1_ipplus.pth``) that may hold the same tensors.
- ``unofficial``: xUhEngwAng/I2V-Adapter-Unofficial, ``<block>.transformer_blocks.0.i2v_adapter.to_q.weight`` etc.
- ``own``: our ``.safetensors``, ldm names (``input_blocks.1.1.transformer_blocks.0.attn1.to_q_ff.weight``).

Every key of a file is either an adapter tensor or belongs to a recognised family (base UNet, motion
module, IP-Adapter, the unofficial frozen K/V copies); anything else is an error that names the keys.
Pickles are read with ``torch.serialization.load(weights_only=True)`` only.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapter import (
    OUT_BIAS,
    OUT_WEIGHT,
    Q_WEIGHT,
    TENSOR_SUFFIXES,
    AdapterWeights,
    LayerWeights,
    WeightsError,
)
from .naming import UnknownLayerName, diffusers_to_ldm, is_ldm_name
from .reading import RawFile, listing, read_file, strip_prefixes

FORMAT_NAME = "i2v-adapter"
FORMAT_VERSION = "1"

_ADAPTER_KEY = re.compile(r"^(?P<layer>.+\.attn1)\.(?P<suffix>to_q_ff\.weight|to_out_ff\.weight|to_out_ff\.bias)$")
_UNOFFICIAL_KEY = re.compile(
    r"^(?P<block>.+\.transformer_blocks\.\d+)\.i2v_adapter\."
    r"(?P<part>to_q\.weight|to_k\.weight|to_v\.weight|to_out\.0\.weight|to_out\.0\.bias)$"
)
_UNOFFICIAL_SUFFIXES = {"to_q.weight": Q_WEIGHT, "to_out.0.weight": OUT_WEIGHT, "to_out.0.bias": OUT_BIAS}

# Non-adapter keys we recognise, by family: diffusers UNet2D/3D names (SD1.5, SD2, SDXL),
# AnimateDiff motion modules (the mm_sd_v15 layout) and IP-Adapter K/V.
_PARAM = r"\.(?:weight|bias)$"
_BLOCK = r"^(?:down_blocks\.\d+|up_blocks\.\d+|mid_block)"
_FAMILIES = {
    "unet": (
        r"^(?:conv_in|conv_cat|conv_norm_out|conv_out|time_embedding\.linear_[12]|add_embedding\.linear_[12])" + _PARAM,
        _BLOCK + r"\.resnets\.\d+\.(?:norm1|conv1|time_emb_proj|norm2|conv2|conv_shortcut)" + _PARAM,
        r"^(?:down_blocks\.\d+\.downsamplers|up_blocks\.\d+\.upsamplers)\.\d+\.conv" + _PARAM,
        _BLOCK + r"\.attentions\.\d+\.(?:norm|proj_in|proj_out|transformer_blocks\.\d+\."
        r"(?:norm[123]|norm_temp|ff\.net\.0\.proj|ff\.net\.2|(?:attn[12]|attn_temp)\.(?:to_q|to_k|to_v|to_out\.0)))"
        + _PARAM,
    ),
    "ip_adapter": (_BLOCK + r"\.attentions\.\d+\.transformer_blocks\.\d+\.attn2\.(?:to_k_ip|to_v_ip)" + _PARAM,),
    "motion_module": (
        _BLOCK + r"\.motion_modules\.\d+\.temporal_transformer\.(?:norm|proj_in|proj_out|transformer_blocks\.\d+\."
        r"(?:attention_blocks\.\d+\.(?:to_q|to_k|to_v|to_out\.0)|norms\.\d+|ff\.net\.0\.proj|ff\.net\.2|ff_norm))"
        + _PARAM,
        _BLOCK + r"\.motion_modules\.\d+\.temporal_transformer\.transformer_blocks\.\d+\."
        r"attention_blocks\.\d+\.pos_encoder\.pe$",
    ),
}
_FAMILY_PATTERNS = {family: tuple(re.compile(p) for p in patterns) for family, patterns in _FAMILIES.items()}
# Families that make a file a whole UNet rather than an adapter file.
_UNET_FAMILIES = ("unet", "ip_adapter", "motion_module")
_UNOFFICIAL_FROZEN = "unofficial_frozen_kv"
_WRAPPER = "checkpoint_wrapper"



def adapter_tensor_name(key: str) -> tuple[str, str] | None:
    """``(canonical ldm layer, suffix)`` of an adapter tensor key in any accepted layout, else None.

    ``suffix`` is one of :data:`TENSOR_SUFFIXES`. The unofficial frozen ``to_k``/``to_v`` copies are not
    adapter tensors and give None.
    """
    key = strip_prefixes(key)
    if m := _ADAPTER_KEY.match(key):
        layer, suffix = m["layer"], m["suffix"]
    elif (m := _UNOFFICIAL_KEY.match(key)) and m["part"] in _UNOFFICIAL_SUFFIXES:
        layer, suffix = m["block"] + ".attn1", _UNOFFICIAL_SUFFIXES[m["part"]]
    else:
        return None
    try:
        return _ldm_layer(layer), suffix
    except UnknownLayerName:
        return None


def _ldm_layer(path: str) -> str:
    """The ldm name of an attn1 path given in ldm or diffusers naming, with no other prefix."""
    return path if is_ldm_name(path) else diffusers_to_ldm(path)


def _family_of(key: str) -> str | None:
    if (m := _UNOFFICIAL_KEY.match(key)) and m["part"] not in _UNOFFICIAL_SUFFIXES:
        try:
            _ldm_layer(m["block"] + ".attn1")
        except UnknownLayerName:
            return None
        return _UNOFFICIAL_FROZEN
    for family, patterns in _FAMILY_PATTERNS.items():
        if any(pattern.match(key) for pattern in patterns):
            return family
    return None


@dataclass
class _SortedKeys:
    """Every key of a file, in exactly one place."""

    # canonical layer -> suffix -> (key in the file, tensor)
    adapter: dict[str, dict[str, tuple[str, torch.Tensor]]] = field(default_factory=dict)
    families: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unofficial: bool = False
    ldm_names: bool = False

    def family(self, name: str) -> list[str]:
        return self.families.get(name, [])

    @property
    def ignored_keys(self) -> list[str]:
        return sorted(key for keys in self.families.values() for key in keys)

    @property
    def is_whole_unet(self) -> bool:
        return any(self.family(name) for name in _UNET_FAMILIES)


def _sort_keys(raw: RawFile) -> _SortedKeys:
    result = _SortedKeys()
    if raw.wrapper_keys:
        result.families[_WRAPPER] = list(raw.wrapper_keys)
    for key, tensor in raw.tensors.items():
        bare = strip_prefixes(key)
        if named := adapter_tensor_name(bare):
            layer, suffix = named
            slot = result.adapter.setdefault(layer, {})
            if suffix in slot:
                result.duplicates.append(f"{slot[suffix][0]} and {key}")
            slot[suffix] = (key, tensor)
            if official := _ADAPTER_KEY.match(bare):
                result.ldm_names |= is_ldm_name(official["layer"])
            else:
                result.unofficial = True
        elif family := _family_of(bare):
            result.families.setdefault(family, []).append(key)
            result.unofficial |= family == _UNOFFICIAL_FROZEN
        else:
            result.unknown.append(key)
    return result


def _source_format(keys: _SortedKeys) -> str:
    if keys.unofficial:
        return "unofficial"
    if keys.is_whole_unet:
        return "ipplus"
    return "own" if keys.ldm_names else "official"


# ---------------------------------------------------------------- checks and assembly


def _check_keys(path, keys: _SortedKeys) -> None:
    if keys.unknown:
        raise WeightsError(
            f"{path}: {len(keys.unknown)} keys are neither I2V-Adapter tensors nor parts of a UNet, motion "
            f"module or IP-Adapter: {listing(sorted(keys.unknown))}"
        )
    if keys.duplicates:
        raise WeightsError(f"{path}: the same adapter tensor appears twice: {listing(keys.duplicates)}")


def _check_complete(path, keys: _SortedKeys) -> None:
    incomplete = []
    for layer, slot in sorted(keys.adapter.items()):
        missing = [suffix for suffix in TENSOR_SUFFIXES if suffix not in slot]
        if missing:
            incomplete.append(f"{layer} lacks {', '.join(missing)}")
    if incomplete:
        raise WeightsError(f"{path}: incomplete adapter layers: {listing(incomplete)}")


def _shape_text(tensor: torch.Tensor) -> str:
    return "x".join(str(size) for size in tensor.shape) or "scalar"


def _check_shapes(path, layers: dict[str, LayerWeights]) -> None:
    bad = []
    for name, layer in sorted(layers.items()):
        c = layer.q_weight.shape[-1] if layer.q_weight.dim() else -1
        shapes = tuple(tuple(t.shape) for t in (layer.q_weight, layer.out_weight, layer.out_bias))
        if shapes != ((c, c), (c, c), (c,)):
            bad.append(
                f"{name} ({Q_WEIGHT} {_shape_text(layer.q_weight)}, {OUT_WEIGHT} {_shape_text(layer.out_weight)}, "
                f"{OUT_BIAS} {_shape_text(layer.out_bias)})"
            )
    if bad:
        raise WeightsError(f"{path}: wrong tensor shapes (expected CxC, CxC, C) in layers: {listing(bad)}")


def _layers_of(keys: _SortedKeys) -> dict[str, LayerWeights]:
    return {
        layer: LayerWeights(slot[Q_WEIGHT][1], slot[OUT_WEIGHT][1], slot[OUT_BIAS][1])
        for layer, slot in keys.adapter.items()
    }


def _read_sorted(path) -> tuple[RawFile, _SortedKeys]:
    raw = read_file(path)
    keys = _sort_keys(raw)
    _check_keys(path, keys)
    return raw, keys


def _weights_from(path, raw: RawFile, keys: _SortedKeys) -> AdapterWeights:
    _check_complete(path, keys)
    layers = _layers_of(keys)
    _check_shapes(path, layers)
    try:
        return AdapterWeights(
            layers=layers,
            source_format=_source_format(keys),
            metadata=dict(raw.metadata),
            ignored_keys=keys.ignored_keys,
        )
    except WeightsError as error:
        raise WeightsError(f"{path}: {error}") from None


def load_adapter_weights(path) -> AdapterWeights:
    """Read an adapter from any accepted file; every problem is a :class:`WeightsError` naming the file."""
    raw, keys = _read_sorted(path)
    if not keys.adapter:
        if keys.is_whole_unet:
            raise WeightsError(
                f"{path} is a whole UNet/motion module without I2V-Adapter weights; the trained adapter is the "
                "official i2v_module.pth"
            )
        raise WeightsError(f"{path} holds no I2V-Adapter weights")
    return _weights_from(path, raw, keys)


# ---------------------------------------------------------------- writing


def require_safetensors_name(path) -> None:
    if not str(path).endswith(".safetensors"):
        raise WeightsError(f"{path}: the output file name must end in .safetensors")


def _independent_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that share no storage (safetensors refuses shared storage)."""
    seen, result = set(), {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        result[key] = tensor
    return result


def _write_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> None:
    """Write to a temporary name first, so a failure never leaves a half-written file at ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    try:
        save_file(_independent_tensors(tensors), str(temporary), metadata=metadata)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def adapter_state_dict(weights: AdapterWeights) -> dict[str, torch.Tensor]:
    """Our key layout: ``<ldm attn1 path>.<suffix>``."""
    tensors = {}
    for name, layer in sorted(weights.layers.items()):
        tensors[f"{name}.{Q_WEIGHT}"] = layer.q_weight
        tensors[f"{name}.{OUT_WEIGHT}"] = layer.out_weight
        tensors[f"{name}.{OUT_BIAS}"] = layer.out_bias
    return tensors


def save_adapter_weights(weights: AdapterWeights, path, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``weights`` as our ``.safetensors`` format (ldm names, metadata format/base/version/source_format,
    plus ``extra_metadata``, e.g. what a training run used)."""
    require_safetensors_name(path)
    metadata = {
        **{key: str(value) for key, value in (extra_metadata or {}).items()},
        "format": FORMAT_NAME,
        "base": weights.base,
        "version": FORMAT_VERSION,
        "source_format": weights.source_format,
    }
    _write_safetensors(adapter_state_dict(weights), path, metadata)


def extract_motion_module(path, out_path) -> int:
    """Write the ``*.motion_modules.*`` tensors of a whole-UNet file as a standalone motion module.

    Keys keep their diffusers-0.11 names (``down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight``),
    the layout of AnimateDiff's ``mm_sd_v15.ckpt`` that sd-webui-animatediff loads (strictly) and classifies
    by key. Returns the number of tensors written.
    """
    require_safetensors_name(out_path)
    raw, keys = _read_sorted(path)
    motion_keys = keys.family("motion_module")
    if not motion_keys:
        raise WeightsError(f"{path} holds no motion module tensors (*.motion_modules.*)")
    if not any(key.endswith(".pos_encoder.pe") for key in motion_keys):
        # sd-webui-animatediff tells the motion module version from the length of pos_encoder.pe.
        raise WeightsError(f"{path}: the motion module has no pos_encoder.pe tensors; AnimateDiff could not load it")
    tensors = {strip_prefixes(key): raw.tensors[key] for key in sorted(motion_keys)}
    _write_safetensors(tensors, out_path, {"format": "animatediff-motion-module", "source": FORMAT_NAME})
    return len(tensors)


# ---------------------------------------------------------------- inspection


def _dtype_text(tensors) -> str:
    names = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in tensors})
    return ", ".join(names) if names else "none"


def _motion_module_version(raw: RawFile, keys: _SortedKeys) -> str | None:
    """AnimateDiff's own rule: mid block -> v2; otherwise a position encoding of 24 frames -> v1, 32 -> v3."""
    motion_keys = keys.family("motion_module")
    if not motion_keys:
        return None
    if any(".mid_block." in f".{strip_prefixes(key)}" for key in motion_keys):
        return "AnimateDiff v2 layout"
    pe = next((raw.tensors[key] for key in motion_keys if key.endswith(".pos_encoder.pe")), None)
    if pe is None:
        return "unknown (no pos_encoder.pe)"
    return f"AnimateDiff {'v3/SDXL' if 32 in pe.shape else 'v1'} layout ({pe.shape[-2]} frames)"


def adapter_output_is_zero(weights: AdapterWeights) -> bool:
    """True for an untrained adapter: ``to_out_ff`` is zero-initialised, so the branch adds nothing.

    The ipplus UNet file may hold such tensors; the trained ones are in ``i2v_module.pth``.
    """
    return all(not layer.out_weight.any() and not layer.out_bias.any() for layer in weights.layers.values())


def describe_weights_file(path) -> dict:
    """What ``inspect`` reports. Whole-UNet files without adapter tensors are described, not refused."""
    raw, keys = _read_sorted(path)
    description = {
        "path": str(path),
        "format": _source_format(keys),
        "layers": 0,
        "parameters": 0,
        "base": "unknown",
        "dtype": _dtype_text(raw.tensors.values()),
        "tensors": len(raw.tensors),
        "ignored_keys": len(keys.ignored_keys),
        "ignored_families": {name: len(found) for name, found in sorted(keys.families.items())},
        "metadata": dict(raw.metadata),
        "motion_module": bool(keys.family("motion_module")),
        "motion_module_tensors": len(keys.family("motion_module")),
        "motion_module_version": _motion_module_version(raw, keys),
        "adapter_output_is_zero": None,
    }
    if keys.adapter:
        weights = _weights_from(path, raw, keys)
        description.update(
            layers=len(weights.layers),
            parameters=weights.parameter_count,
            base=weights.base,
            dtype=_dtype_text(
                t for layer in weights.layers.values() for t in (layer.q_weight, layer.out_weight, layer.out_bias)
            ),
            adapter_output_is_zero=adapter_output_is_zero(weights),
        )
    return description
