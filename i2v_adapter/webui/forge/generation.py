"""Classic Forge: the first-frame branch as UnetPatcher patches, and Forge's sampler conventions.

Classic Forge (and its ``ldm_patched`` descendants reForge and Forge Classic) gets the same generation as
A1111, with three differences:

- The branch is added through the cloned UnetPatcher, not through forward hooks: an ``attn1_patch`` keeps
  each attn1's input and an ``attn1_output_patch`` adds the branch to attn1's result. Both run even when
  another patch replaces attn1 (Forge's reference-only does), which skips the attn1 module and so any
  forward hook on it. The clone is dropped by Forge after sampling: nothing to undo.
- Forge batches [uncond | cond] in the order of ``transformer_options["cond_or_uncond"]``, and
  ``on_cfg_denoiser`` sees the frames once (not doubled) with real sigmas for every sampler.
- sd-webui-animatediff's forge branch drops API requests on the floor (see ``animatediff_api``).

Forge 2 (``backend/``) has no AnimateDiff: there the extension brings its own motion module (``forge2``),
on top of the same first-frame patches.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ...hooks import FirstFrameBranch
from ...weights.adapter import AdapterWeights, LayerWeights
from ..generation import Generation
from . import controlnet as forge_controlnet

# -- where a patch call is --------------------------------------------------------------------------

_LDM_BLOCK = re.compile(r"^(input|output)_blocks\.(\d+)\.\d+\.transformer_blocks\.(\d+)\.attn1$")
_LDM_MIDDLE = re.compile(r"^middle_block\.\d+\.transformer_blocks\.(\d+)\.attn1$")


def transformer_key(layer_name: str) -> tuple[str, int, int] | None:
    """``input_blocks.4.1.transformer_blocks.0.attn1`` -> ``("input", 4, 0)``: the block as Forge names it."""
    if match := _LDM_BLOCK.match(layer_name):
        return match[1], int(match[2]), int(match[3])
    if match := _LDM_MIDDLE.match(layer_name):
        return "middle", 0, int(match[1])
    return None


def options_key(options: dict) -> tuple[str, int, int] | None:
    block = options.get("block")
    if block is None:
        return None
    return block[0], int(block[1]), int(options.get("block_index", 0))


def chunk_length(rows: int, options: dict) -> int | None:
    """Rows per cond/uncond chunk of a Forge UNet call, or None when the rows do not split evenly.

    AnimateDiff's context windows run the UNet on part of the frames without narrowing
    ``transformer_options``: only ``cond_or_uncond`` stays true, so the chunk comes from it.
    """
    chunks = len(options.get("cond_or_uncond") or ()) or 1
    return rows // chunks if rows % chunks == 0 else None


def first_frame_patches(branches: dict[tuple[str, int, int], FirstFrameBranch]):
    """The ``attn1_patch`` and ``attn1_output_patch`` that add each layer's first-frame branch.

    ``branches`` maps Forge's (block type, block id, block index) to the layer's branch. The two patches
    are plain functions: Forge deep-copies patcher options on every clone, which copies objects but
    keeps functions, so the branches and their weights are shared, never duplicated.
    """
    inputs: dict[tuple[str, int, int], torch.Tensor] = {}

    def attn1_patch(n, context, value, options):
        key = options_key(options)
        # Forge sets context and value to n itself for self-attention; anything else is not ours to touch.
        if key in branches and context is n and value is n:
            inputs[key] = n
        return n, context, value

    def attn1_output_patch(out, options):
        key = options_key(options)
        x = inputs.pop(key, None)
        if x is None:
            return out
        branch = branches[key]
        if x.shape != out.shape or chunk_length(x.shape[0], options) != branch.layout.window.chunk_length:
            branch.layout.stats["untouched"] += 1
            return out
        return branch(x, out)

    return attn1_patch, attn1_output_patch


# -- the adapter weights as a module Forge's memory manager can move ----------------------------------

class AdapterModule(nn.Module):
    """The adapter's tensors as frozen parameters, so that Forge moves them with the UNet.

    Moving a module keeps its Parameter objects and swaps their data, so the ``LayerWeights`` handed to
    the branches (which hold these Parameters) always see where Forge put them.
    """

    def __init__(self, weights: AdapterWeights):
        super().__init__()
        self.names = sorted(weights.layers)
        self.tensors = nn.ParameterList()
        for name in self.names:
            layer = weights.layers[name]
            for tensor in (layer.q_weight, layer.out_weight, layer.out_bias):
                self.tensors.append(nn.Parameter(tensor, requires_grad=False))

    def layer(self, name: str) -> LayerWeights:
        start = 3 * self.names.index(name)
        return LayerWeights(*(self.tensors[start + i] for i in range(3)))


# -- one generation -----------------------------------------------------------------------------------

class ForgeGeneration(Generation):
    """An A1111 generation whose branches live in UnetPatcher clones and whose callbacks speak Forge."""

    controlnet = forge_controlnet.BUILTIN

    def install_branches(self) -> None:
        weights = self.hooks.weights
        self.module = AdapterModule(weights) if weights is not None else None
        # The branches read the module's parameters, so they follow wherever Forge moves the module.
        layer_weights = self.module.layer if self.module is not None else None
        self.branches = {transformer_key(name): branch for name, branch in self.hooks.branches(layer_weights).items()
                         if transformer_key(name) is not None}

    def patch_unet(self, p) -> None:
        """Called before every sampling, after AnimateDiff put its motion modules on the UNet."""
        unet = p.sd_model.forge_objects.unet.clone()
        attn1_patch, attn1_output_patch = first_frame_patches(self.branches)
        unet.set_model_attn1_patch(attn1_patch)
        unet.set_model_attn1_output_patch(attn1_output_patch)
        if self.module is not None:
            unet.add_extra_torch_module_during_sampling(self.module, cast_to_unet_dtype=False)
        p.sd_model.forge_objects.unet = unet

    def is_timestep_sampler(self, denoiser) -> bool:
        return False  # Forge runs every sampler in sigma space

    def model_input_first_frame_rows(self, params) -> tuple[list[int], torch.Tensor | None]:
        # Forge hands the frames over once (not doubled): frame 0 is row 0.
        return ([0] if len(params.x) == self.geometry.frames else []), params.sigma
