"""The adapter's trained tensors, keyed by canonical (ldm) attn1 layer name."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Suffixes of the three tensors of one layer, in our file format and the official one.
Q_WEIGHT = "to_q_ff.weight"
OUT_WEIGHT = "to_out_ff.weight"
OUT_BIAS = "to_out_ff.bias"
TENSOR_SUFFIXES = (Q_WEIGHT, OUT_WEIGHT, OUT_BIAS)


class WeightsError(ValueError):
    """A weights file that cannot be used; the message is meant for the user."""


class BaseModelMismatch(WeightsError):
    """An adapter made for another picture model (``adapter_base``, ``model_base``: 'sd15' or 'sdxl')."""

    def __init__(self, adapter_base: str, model_base: str):
        super().__init__(f"This adapter was made for {BASE_LABELS[adapter_base]} but the loaded model is "
                         f"{BASE_LABELS[model_base]}.")
        self.adapter_base = adapter_base
        self.model_base = model_base


@dataclass
class LayerWeights:
    """``to_q_ff`` (C x C, no bias) and ``to_out_ff`` (C x C + bias) of one attn1 layer."""

    q_weight: torch.Tensor
    out_weight: torch.Tensor
    out_bias: torch.Tensor

    @property
    def channels(self) -> int:
        return self.q_weight.shape[1]

    @property
    def parameter_count(self) -> int:
        return self.q_weight.numel() + self.out_weight.numel() + self.out_bias.numel()

    def to(self, device, dtype) -> "LayerWeights":
        return LayerWeights(*(t.to(device=device, dtype=dtype) for t in (self.q_weight, self.out_weight, self.out_bias)))


def _matching_shapes(layer: LayerWeights) -> bool:
    c = layer.q_weight.shape[-1]
    return (
        tuple(layer.q_weight.shape) == (c, c)
        and tuple(layer.out_weight.shape) == (c, c)
        and tuple(layer.out_bias.shape) == (c,)
    )


@dataclass
class AdapterWeights:
    """All layers of one adapter.

    ``base`` is told from the layer set (``sd15``, ``sdxl`` or ``unknown``), never from a file name.
    """

    layers: dict[str, LayerWeights]
    source_format: str
    base: str = "unknown"
    metadata: dict[str, str] = field(default_factory=dict)
    # Keys of the file that are not adapter tensors but were recognised (base UNet, motion module, ...).
    ignored_keys: list[str] = field(default_factory=list)

    def __post_init__(self):
        bad = [name for name, layer in self.layers.items() if not _matching_shapes(layer)]
        if bad:
            raise WeightsError(f"Adapter tensors have inconsistent shapes in layers: {', '.join(sorted(bad))}")
        if self.base == "unknown":
            self.base = base_model_of(self.layers)

    @property
    def parameter_count(self) -> int:
        return sum(layer.parameter_count for layer in self.layers.values())

    def check_against(self, unet_channels: dict[str, int]) -> None:
        """Raise a :class:`WeightsError` unless the layers match the UNet's attn1 layers exactly.

        ``unet_channels`` maps canonical attn1 names of the UNet to their channel width.
        """
        unet_base = base_model_of_channels(unet_channels)
        if self.base != "unknown" and unet_base != "unknown" and unet_base != self.base:
            raise BaseModelMismatch(self.base, unet_base)
        missing = sorted(set(unet_channels) - set(self.layers))
        extra = sorted(set(self.layers) - set(unet_channels))
        wrong = sorted(
            f"{name} (adapter {self.layers[name].channels}, model {unet_channels[name]})"
            for name in set(self.layers) & set(unet_channels)
            if self.layers[name].channels != unet_channels[name]
        )
        problems = []
        if missing:
            problems.append(f"missing layers: {', '.join(missing)}")
        if extra:
            problems.append(f"layers the model does not have: {', '.join(extra)}")
        if wrong:
            problems.append(f"channel mismatch: {', '.join(wrong)}")
        if problems:
            raise WeightsError("The adapter does not fit this model; " + "; ".join(problems) + ".")


BASE_LABELS = {"sd15": "SD1.5/SD2 (16 attention layers)", "sdxl": "SDXL (70 attention layers)", "unknown": "an unknown model"}

# Channel width of every attn1 layer: SD1.5 (and SD2) has 16, SDXL has 70.
_SD15_LAYER_COUNT = 16
_SDXL_LAYER_COUNT = 70


def base_model_of_channels(channels: dict[str, int]) -> str:
    widths = set(channels.values())
    if len(channels) == _SD15_LAYER_COUNT and widths == {320, 640, 1280}:
        return "sd15"
    if len(channels) == _SDXL_LAYER_COUNT and widths == {640, 1280}:
        return "sdxl"
    return "unknown"


def base_model_of(layers: dict[str, LayerWeights]) -> str:
    return base_model_of_channels({name: layer.channels for name, layer in layers.items()})
