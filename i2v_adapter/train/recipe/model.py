"""The trainable adapter on a frozen UNet, through the engine's own first-frame branch.

Geometry comes from the UNet: one ``to_q_ff`` (a copy of that layer's ``to_q``) and one zero-initialised
``to_out_ff`` per spatial self-attention layer that :func:`find_attn1_layers` finds (16 in SD1.5, 70 in
SDXL). At initialisation the branch adds exactly zero, so training starts from the base video model.
"""
from __future__ import annotations

import torch
from torch import nn

from ...hooks import FirstFrameBranch, FirstFrameHooks, find_attn1_layers
from ...layout import FrameLayout
from ...weights.adapter import AdapterWeights, LayerWeights


class AdapterLayer(nn.Module):
    def __init__(self, attention: nn.Module):
        super().__init__()
        channels = attention.to_q.in_features
        if attention.to_q.out_features != channels:
            raise ValueError(f"attn1 projects {channels} channels to {attention.to_q.out_features}; the adapter "
                             "format needs square projections")
        device = attention.to_q.weight.device
        self.to_q_ff = nn.Linear(channels, channels, bias=False, device=device)
        self.to_out_ff = nn.Linear(channels, channels, device=device)
        with torch.no_grad():
            self.to_q_ff.weight.copy_(attention.to_q.weight.float())
            self.to_out_ff.weight.zero_()
            self.to_out_ff.bias.zero_()

    def live_weights(self) -> LayerWeights:
        """The parameters themselves (no copy): the branch reads them, autograd reaches them."""
        return LayerWeights(self.to_q_ff.weight, self.to_out_ff.weight, self.to_out_ff.bias)


class FirstFrameAdapter(nn.Module):
    """All adapter layers of one UNet. ``forward`` runs the (hooked, frozen) UNet, so that DDP wraps
    only the adapter while every forward still goes through the wrapper."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        attention = find_attn1_layers(unet)
        if not attention:
            raise ValueError("this UNet has no spatial self-attention layers to adapt")
        self.layer_names = sorted(attention)
        self.layers = nn.ModuleList(AdapterLayer(attention[name]) for name in self.layer_names)

    def forward(self, unet: nn.Module, sample, timestep, encoder_hidden_states, added_cond_kwargs=None):
        return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                    added_cond_kwargs=added_cond_kwargs).sample

    @property
    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def live_weights(self) -> dict[str, LayerWeights]:
        return {name: layer.live_weights() for name, layer in zip(self.layer_names, self.layers)}

    def export(self) -> AdapterWeights:
        """A detached float32 CPU copy, ready for :func:`save_adapter_weights` or the engine's hooks."""
        layers = {name: LayerWeights(*(t.detach().float().cpu().clone() for t in
                                       (w.q_weight, w.out_weight, w.out_bias)))
                  for name, w in self.live_weights().items()}
        return AdapterWeights(layers, source_format="trained")


class _TrainingBranch(FirstFrameBranch):
    def _weights_like(self, x: torch.Tensor) -> LayerWeights:
        # The engine caches a cast copy; here the parameters change every step, so cast anew (differentiably).
        return self.weights.to(x.device, x.dtype)


class TrainingHooks(FirstFrameHooks):
    """The engine's hooks with the adapter's live parameters; every clip of a batch is one chunk."""

    def __init__(self, unet: nn.Module, adapter: FirstFrameAdapter, frames: int):
        # Live parameters as the hook set's weights: the trained-branch path, checked against the UNet.
        super().__init__(unet, FrameLayout(frames, 0), AdapterWeights(adapter.live_weights(), "training"))
        if sorted(self.layers) != adapter.layer_names:
            raise ValueError("the adapter was built for another UNet")
        self.adapter = adapter

    def branches(self, layer_weights=None):
        live = self.adapter.live_weights()
        return {name: _TrainingBranch(name, module, self.layout, live[name], self.settings)
                for name, module in self.layers.items()}
