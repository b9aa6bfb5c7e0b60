"""IP-Adapter weights by name: h94 files and the K/V of the official ipplus UNet.

An IP-Adapter has two parts: the image projection (``image_proj``: the plus variant's Resampler turning the
CLIP image encoder's penultimate hidden states into 16 tokens, or the plain variant's linear map of the
image embedding to 4 tokens) and, for every cross-attention layer (attn2) of the UNet, the ``to_k_ip`` /
``to_v_ip`` projections of those tokens.

- h94 files (``ip-adapter-plus_sd15.bin`` / ``.safetensors``): ``{"image_proj": {...}, "ip_adapter":
  {"1.to_k_ip.weight": ...}}``, or the same keys flattened with dots. The numbers are positions in the SD
  UNet's list of attention layers (attn1 and attn2 of every transformer block; down blocks, then up blocks,
  then the mid block), so the cross-attention layers are 1, 3, 5, ...
- The official ``animatediff_v15_v1_ipplus.pth`` names the K/V by layer
  (``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_ip.weight``) and has no image projection;
  the official code takes that from h94's ``ip-adapter-plus_sd15.bin``.

Files are read safely (safetensors, or PyTorch's weights-only unpickler); every key is used or reported.
Nothing here imports diffusers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .adapter import WeightsError
from .reading import check_weights_path, listing, load_pickle, looks_like_safetensors, read_safetensors, \
    strip_prefixes

PLUS, PLAIN = "plus", "plain"
_PLAIN_KEYS = {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}
_PLAIN_TOKENS = 4  # diffusers' ImageProjection for the plain IP-Adapter has 4 tokens, as h94's files
_POSITION_KEY = re.compile(r"^ip_adapter\.(?P<position>\d+)\.(?P<part>to_k_ip|to_v_ip)\.weight$")
_LAYER_KEY = re.compile(r"^(?P<layer>.+\.attn2)\.(?P<part>to_k_ip|to_v_ip)\.weight$")
_ATTENTION_PATH = re.compile(
    r"^(?P<group>down_blocks|up_blocks|mid_block)(?:\.(?P<block>\d+))?\.attentions\.(?P<attention>\d+)"
    r"\.transformer_blocks\.(?P<transformer>\d+)\.attn2$"
)
_GROUP_ORDER = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}
PLUS_ENCODER_HINT = "h94/IP-Adapter's models/image_encoder (OpenCLIP ViT-H/14) for the SD1.5 IP-Adapters"


@dataclass(frozen=True)
class IPLayerKV:
    """``to_k_ip`` and ``to_v_ip`` of one cross-attention layer, each (inner dim, context dim)."""

    key: torch.Tensor
    value: torch.Tensor


@dataclass
class IPAdapterWeights:
    """One IP-Adapter: image projection (h94 names, without ``image_proj.``) and K/V.

    The K/V are keyed by h94 position (``positions``, from h94 files) or by diffusers attn2 path
    (``layers``, from the ipplus UNet); :func:`kv_for_layers` maps either onto a UNet's layers.
    """

    image_proj: dict[str, torch.Tensor]
    positions: dict[int, IPLayerKV] = field(default_factory=dict)
    layers: dict[str, IPLayerKV] = field(default_factory=dict)
    source: str = ""
    kv_source: str = ""

    @property
    def variant(self) -> str:
        return PLUS if "latents" in self.image_proj else PLAIN

    @property
    def tokens(self) -> int:
        """Image tokens the projection makes (16 for plus, 4 for plain)."""
        if self.variant == PLUS:
            return self.image_proj["latents"].shape[1]
        return self.image_proj["proj.weight"].shape[0] // self.output_dim

    @property
    def image_feature_dim(self) -> int:
        """Width of the image features it reads: the encoder's hidden size (plus) or its projection (plain)."""
        return self.image_proj["proj_in.weight" if self.variant == PLUS else "proj.weight"].shape[1]

    @property
    def output_dim(self) -> int:
        """Width of the image tokens: must be the UNet's cross-attention (text context) width."""
        return self.image_proj["proj_out.weight" if self.variant == PLUS else "norm.weight"].shape[0]

    @property
    def kv_count(self) -> int:
        return len(self.positions) + len(self.layers)

    def with_layer_kv(self, layers: dict[str, IPLayerKV], source: str) -> "IPAdapterWeights":
        """The same image projection with other K/V (the official pairing: ipplus K/V, h94 projection)."""
        return replace(self, positions={}, layers=dict(layers), kv_source=source)


# ---------------------------------------------------------------- reading


def _flat_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an IP-Adapter file, nested dicts of a ``.bin`` flattened with dots."""
    check_weights_path(path)
    if looks_like_safetensors(path):
        return read_safetensors(path).tensors
    loaded = load_pickle(path)
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a dictionary of tensors")
    tensors, not_tensors = {}, []
    for key, value in loaded.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for inner, tensor in items:
            name = f"{key}.{inner}" if inner is not None else str(key)
            if isinstance(tensor, torch.Tensor):
                tensors[name] = tensor
            else:
                not_tensors.append(f"{name} ({type(tensor).__name__})")
    if not_tensors:
        raise WeightsError(f"{path} holds entries that are not tensors: {listing(not_tensors)}")
    return tensors


def _pairs(found: dict, what: str, path) -> dict:
    incomplete = [f"{name} lacks {'to_v_ip' if 'to_k_ip' in parts else 'to_k_ip'}"
                  for name, parts in sorted(found.items(), key=lambda item: str(item[0])) if len(parts) != 2]
    if incomplete:
        raise WeightsError(f"{path}: incomplete IP-Adapter {what}: {listing(incomplete)}")
    return {name: IPLayerKV(parts["to_k_ip"], parts["to_v_ip"]) for name, parts in found.items()}


def ipplus_layer_kv(tensors: dict[str, torch.Tensor], path="the file") -> dict[str, IPLayerKV]:
    """The ``*.attn2.to_k_ip/to_v_ip.weight`` tensors of a whole-UNet file, by diffusers attn2 path."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if m := _LAYER_KEY.match(strip_prefixes(key)):
            found.setdefault(m["layer"], {})[m["part"]] = tensor
    return _pairs(found, "layers", path)


def _check_image_proj(path, image_proj: dict[str, torch.Tensor]) -> None:
    if not image_proj:
        return
    if "latents" in image_proj:
        required = {"latents", "proj_in.weight", "proj_out.weight", "norm_out.weight"}
    elif set(image_proj) == _PLAIN_KEYS:
        required = _PLAIN_KEYS
    else:
        raise WeightsError(
            f"{path}: the image projection is neither IP-Adapter plus (a Resampler with image_proj.latents) nor the "
            f"plain IP-Adapter (image_proj.proj/norm); face and full-face variants are not supported: "
            f"{listing(sorted(image_proj))}"
        )
    missing = sorted(required - set(image_proj))
    if missing:
        raise WeightsError(f"{path}: the image projection lacks {listing(missing)}")


def ip_adapter_from_tensors(tensors: dict[str, torch.Tensor], path="the file") -> IPAdapterWeights:
    """An :class:`IPAdapterWeights` from h94 keys (``image_proj.*``, ``ip_adapter.N.to_k_ip.weight``)."""
    image_proj, positions, unknown = {}, {}, []
    layer_keys = {key for key in tensors if _LAYER_KEY.match(strip_prefixes(key))}
    for key, tensor in tensors.items():
        if key.startswith("image_proj."):
            image_proj[key.removeprefix("image_proj.")] = tensor
        elif m := _POSITION_KEY.match(key):
            positions.setdefault(int(m["position"]), {})[m["part"]] = tensor
        elif key not in layer_keys:
            unknown.append(key)
    if layer_keys and positions:
        raise WeightsError(f"{path} holds IP-Adapter K/V both by number and by layer name; give one IP-Adapter")
    if layer_keys and not image_proj:
        raise WeightsError(
            f"{path} holds IP-Adapter K/V by layer name but no image projection (the official ipplus UNet?): give it "
            "as --motion-module, and h94's ip-adapter-plus_sd15.bin as --ip-adapter for the image projection"
        )
    if unknown:
        raise WeightsError(
            f"{path}: {len(unknown)} keys are not parts of an IP-Adapter (image_proj.*, ip_adapter.N.to_k_ip/to_v_ip"
            f".weight): {listing(sorted(unknown))}"
        )
    if not image_proj and not positions:
        raise WeightsError(f"{path} holds no IP-Adapter tensors")
    if not image_proj:
        raise WeightsError(f"{path} holds IP-Adapter K/V but no image projection (image_proj.*)")
    _check_image_proj(path, image_proj)
    weights = IPAdapterWeights(image_proj, _pairs(positions, "positions", path), ipplus_layer_kv(tensors, path),
                               str(path), str(path))
    if weights.variant == PLAIN and weights.tokens != _PLAIN_TOKENS:
        raise WeightsError(f"{path}: a plain IP-Adapter with {weights.tokens} tokens; only {_PLAIN_TOKENS} are "
                           "supported")
    return weights


def read_ip_adapter_file(path) -> IPAdapterWeights:
    """Read an h94 IP-Adapter file; every problem is a :class:`WeightsError` naming the file."""
    path = Path(path)
    return ip_adapter_from_tensors(_flat_tensors(path), path)


# ---------------------------------------------------------------- matching a UNet


def h94_order(cross_attention_paths) -> list[str]:
    """diffusers attn2 paths in the order h94's positions count them: down blocks, up blocks, mid block."""
    def sort_key(path: str):
        m = _ATTENTION_PATH.match(path)
        if m is None:
            raise WeightsError(f"{path} is not a cross-attention layer of an SD UNet")
        return (_GROUP_ORDER[m["group"]], int(m["block"] or 0), int(m["attention"]), int(m["transformer"]))

    return sorted(cross_attention_paths, key=sort_key)


def h94_positions(cross_attention_paths) -> dict[int, str]:
    """h94 position -> attn2 path. Each transformer block has attn1 then attn2, so attn2 sits at 1, 3, 5, ..."""
    return {2 * index + 1: path for index, path in enumerate(h94_order(cross_attention_paths))}


def kv_for_layers(weights: IPAdapterWeights, shapes: dict[str, tuple[int, int]]) -> dict[str, IPLayerKV]:
    """The K/V of every cross-attention layer of a UNet, given ``{attn2 path: to_k weight shape}``.

    Every layer must get K/V and every K/V must find its layer, with the layer's shape.
    """
    if weights.layers:
        kv = dict(weights.layers)
        missing, extra = sorted(set(shapes) - set(kv)), sorted(set(kv) - set(shapes))
        if missing or extra:
            raise WeightsError(
                f"{weights.kv_source}: the IP-Adapter K/V do not fit this UNet's cross-attention layers: "
                + "; ".join(part for part in (f"missing {listing(missing)}" if missing else "",
                                              f"unknown {listing(extra)}" if extra else "") if part)
            )
    else:
        by_position = h94_positions(shapes)
        if set(weights.positions) != set(by_position):
            raise WeightsError(
                f"{weights.kv_source}: K/V for {len(weights.positions)} cross-attention layers, this UNet has "
                f"{len(by_position)}: an IP-Adapter for another base model?"
            )
        kv = {path: weights.positions[position] for position, path in by_position.items()}
    bad = [f"{path} ({'x'.join(map(str, pair.key.shape))}, expected {'x'.join(map(str, shapes[path]))})"
           for path, pair in sorted(kv.items())
           if tuple(pair.key.shape) != tuple(shapes[path]) or pair.value.shape != pair.key.shape]
    if bad:
        raise WeightsError(
            f"{weights.kv_source}: IP-Adapter K/V of the wrong shape (an IP-Adapter for another base model?): "
            f"{listing(bad)}"
        )
    return kv


def with_ipplus_kv(weights: IPAdapterWeights, ipplus: dict[str, IPLayerKV],
                   source: str) -> tuple[IPAdapterWeights, str]:
    """The official pairing: the ipplus UNet's K/V with the h94 file's image projection; and a note on it."""
    note = f"IP-Adapter K/V from {source} (as the official code), image projection from {weights.source}"
    if weights.kv_count:
        note += f"; its K/V are {'identical to' if _same_kv(weights, ipplus) else 'different from'} the ones in " \
                f"{weights.source}"
    if weights.variant != PLUS:
        note += f"; {weights.source} is the plain IP-Adapter, while the ipplus K/V were made for IP-Adapter plus"
    return weights.with_layer_kv(ipplus, source), note


def _same_kv(weights: IPAdapterWeights, layers: dict[str, IPLayerKV]) -> bool:
    """Whether the file's K/V equal ``layers`` tensor for tensor (h94 positions read in ``layers``' order)."""
    own = dict(weights.layers)
    if weights.positions:
        try:
            own = {path: weights.positions[p] for p, path in h94_positions(layers).items() if p in weights.positions}
        except WeightsError:
            return False
    return weights.kv_count == len(own) == len(layers) and all(
        path in layers and _equal(kv.key, layers[path].key) and _equal(kv.value, layers[path].value)
        for path, kv in own.items()
    )


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.to(b.dtype), b)
