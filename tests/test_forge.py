"""Forge glue without Forge: the attn1 patch callables on the inputs Forge documents, against a naive reference.

Forge's ``BasicTransformerBlock`` calls ``attn1_patch(n, context, value, extra_options)`` with context and
value set to ``n`` itself for self-attention, then attn1 (or a replace patch), then
``attn1_output_patch(out, extra_options)``. ``extra_options`` carries ``block`` (("input", id),
("middle", 0), ("output", id)), ``block_index`` and ``cond_or_uncond`` (one entry per chunk, 1 = uncond).
"""
import copy
import sys
import types

import pytest
import torch

from i2v_adapter.hooks import BranchSettings, FirstFrameBranch, FirstFrameHooks, find_attn1_layers
from i2v_adapter.layout import FrameLayout, Window
from i2v_adapter.webui import host
from i2v_adapter.webui.forge import animatediff_api
from i2v_adapter.webui.forge import generation as forge

import models
from test_branch import naive_branch

SD15_FORGE_BLOCKS = {("input", i, 0) for i in (1, 2, 4, 5, 7, 8)} | {("middle", 0, 0)} | {
    ("output", i, 0) for i in range(3, 12)}


def options(block, cond_or_uncond, index=0):
    return {"block": block, "block_index": index, "cond_or_uncond": list(cond_or_uncond),
            "transformer_index": 0, "n_heads": 4, "dim_head": 8}


def branch_setup(chunk_length, position=0, scale=0.8, keep_reference=False):
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    name, attention = next(iter(find_attn1_layers(unet).items()))
    layout = FrameLayout(chunk_length, position, keep_reference=keep_reference)
    key = forge.transformer_key(name)
    branch = FirstFrameBranch(name, attention, layout, weights.layers[name], BranchSettings(scale))
    patch, output_patch = forge.first_frame_patches({key: branch})
    return attention, weights.layers[name], layout, key, patch, output_patch


def run_block(attention, x, patch, output_patch, extra_options):
    """What Forge's BasicTransformerBlock does around attn1 with our two patches installed."""
    n, context, value = patch(x, x, x, extra_options)
    return output_patch(attention(n), extra_options)


def test_every_sd15_attn1_has_the_key_forge_gives_its_block():
    keys = {forge.transformer_key(name) for name in find_attn1_layers(models.ldm_unet())}
    assert keys == SD15_FORGE_BLOCKS
    assert forge.transformer_key("input_blocks.1.1.transformer_blocks.0.attn2") is None


@pytest.mark.parametrize("rows,cond_or_uncond,expected", [(16, [1, 0], 8), (8, [0], 8), (16, [0, 1], 8),
                                                          (15, [1, 0], None), (12, [], 12)])
def test_chunk_length_comes_from_cond_or_uncond(rows, cond_or_uncond, expected):
    assert forge.chunk_length(rows, {"cond_or_uncond": cond_or_uncond}) == expected


@pytest.mark.parametrize("cond_or_uncond", [[1, 0], [0]])
def test_patches_equal_the_naive_reference(cond_or_uncond):
    frames = 4
    attention, weights, layout, key, patch, output_patch = branch_setup(frames)
    torch.manual_seed(5)
    x = torch.randn(frames * len(cond_or_uncond), 16, attention.to_q.in_features)
    with torch.no_grad():
        got = run_block(attention, x, patch, output_patch, options(key[:2], cond_or_uncond))
        expected = naive_branch(attention, x, weights, frames, 0, scale=0.8)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(got, attention(x), atol=1e-3)
    assert layout.stats["anchored"] == 1


def test_window_from_the_scheduler_sets_frame_zero_row():
    # AnimateDiff's window [6, 7, 0, 1] of an 8-frame video: frame 0 is row 2 of each chunk.
    attention, weights, layout, key, patch, output_patch = branch_setup(8)
    layout.set_window(Window.from_frames([6, 7, 0, 1]))
    torch.manual_seed(6)
    x = torch.randn(8, 16, attention.to_q.in_features)
    with torch.no_grad():
        got = run_block(attention, x, patch, output_patch, options(key[:2], [1, 0]))
        expected = naive_branch(attention, x, weights, 4, 2, scale=0.8)
    assert torch.allclose(got, expected, atol=1e-5)


def test_window_without_frame_zero_uses_the_bank():
    attention, weights, layout, key, patch, output_patch = branch_setup(4, keep_reference=True)
    torch.manual_seed(8)
    with_zero = torch.randn(8, 16, attention.to_q.in_features)
    without_zero = torch.randn(8, 16, attention.to_q.in_features)
    with torch.no_grad():
        layout.set_window(Window.from_frames([0, 1, 2, 3]))
        run_block(attention, with_zero, patch, output_patch, options(key[:2], [1, 0]))
        layout.set_window(Window.from_frames([4, 5, 6, 7]))
        got = run_block(attention, without_zero, patch, output_patch, options(key[:2], [1, 0]))
        # Reference: the frames of the second window attend to frame 0 of the first, chunk by chunk.
        stacked = torch.cat([with_zero[:4], without_zero[:4], with_zero[4:], without_zero[4:]])
        expected = naive_branch(attention, stacked, weights, 8, 0, scale=0.8)
        expected = torch.cat([expected[4:8], expected[12:16]])
    assert torch.allclose(got, expected, atol=1e-5)
    assert layout.stats["banked"] == 1


def test_rows_that_disagree_with_the_window_are_untouched():
    # 16 rows in 2 chunks is 8 frames a chunk, but the scheduler said windows of 4: leave the call alone.
    attention, weights, layout, key, patch, output_patch = branch_setup(4)
    x = torch.randn(16, 16, attention.to_q.in_features)
    with torch.no_grad():
        got = run_block(attention, x, patch, output_patch, options(key[:2], [1, 0]))
    assert torch.equal(got, attention(x))
    assert layout.stats["untouched"] == 1


def test_cross_attention_and_other_layers_are_left_alone():
    attention, weights, layout, key, patch, output_patch = branch_setup(4)
    x = torch.randn(8, 16, attention.to_q.in_features)
    text = torch.randn(8, 7, attention.to_q.in_features)
    with torch.no_grad():
        n, context, value = patch(x, text, text, options(key[:2], [1, 0]))  # disable_self_attn style call
        assert context is text and n is x
        assert torch.equal(output_patch(attention(x), options(key[:2], [1, 0])), attention(x))
        other = options(("output", 11), [1, 0])
        assert torch.equal(run_block(attention, x, patch, output_patch, other), attention(x))
    assert sum(layout.stats.values()) == 0


def test_patches_survive_forges_deepcopy_of_model_options():
    # UnetPatcher.clone() deep-copies model_options: the patches must stay the same shared functions.
    *_, patch, output_patch = branch_setup(4)
    model_options = {"transformer_options": {"patches": {"attn1_patch": [patch], "attn1_output_patch": [output_patch]}}}
    copied = copy.deepcopy(model_options)["transformer_options"]["patches"]
    assert copied["attn1_patch"][0] is patch and copied["attn1_output_patch"][0] is output_patch


def test_adapter_module_follows_moves_of_forges_memory_manager():
    weights = models.random_adapter(models.ldm_unet())
    module = forge.AdapterModule(weights)
    name = sorted(weights.layers)[3]
    layer = module.layer(name)
    assert torch.equal(layer.q_weight, weights.layers[name].q_weight)
    module.to(torch.float64)  # what Forge's model management does with device (and dtype)
    assert layer.q_weight.dtype == layer.out_bias.dtype == torch.float64
    assert sum(p.numel() for p in module.parameters()) == weights.parameter_count


class FakeUnetPatcher:
    def __init__(self, options=None):
        self.model_options = options or {"transformer_options": {}}
        self.extra_modules = []

    def clone(self):
        return FakeUnetPatcher(copy.deepcopy(self.model_options))

    def set_model_attn1_patch(self, patch):
        self.model_options["transformer_options"].setdefault("patches", {}).setdefault("attn1_patch", []).append(patch)

    def set_model_attn1_output_patch(self, patch):
        patches = self.model_options["transformer_options"].setdefault("patches", {})
        patches.setdefault("attn1_output_patch", []).append(patch)

    def add_extra_torch_module_during_sampling(self, module, cast_to_unet_dtype=True):
        self.extra_modules.append((module, cast_to_unet_dtype))


def forge_generation(frames=4):
    """A ForgeGeneration with only what its Forge-specific methods read (no WebUI needed)."""
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    generation = object.__new__(forge.ForgeGeneration)
    generation.layout = FrameLayout(frames)
    generation.hooks = FirstFrameHooks(unet, generation.layout, weights)  # never installed on Forge
    generation.p = types.SimpleNamespace()
    generation.geometry = types.SimpleNamespace(frames=frames)
    generation.z0 = torch.randn(1, 4, 8, 8)
    return generation


def test_patch_unet_clones_adds_both_patches_and_hands_weights_to_forge():
    generation = forge_generation()
    generation.install_branches()
    assert set(generation.branches) == SD15_FORGE_BLOCKS
    original = FakeUnetPatcher()
    p = types.SimpleNamespace(sd_model=types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=original)))
    generation.patch_unet(p)
    patched = p.sd_model.forge_objects.unet
    assert patched is not original and original.model_options == {"transformer_options": {}}
    patches = patched.model_options["transformer_options"]["patches"]
    assert len(patches["attn1_patch"]) == len(patches["attn1_output_patch"]) == 1
    assert patched.extra_modules == [(generation.module, False)]


def test_on_cfg_denoiser_cleans_row_zero_of_the_undoubled_frames():
    generation = forge_generation(frames=4)
    x, sigma = torch.randn(4, 4, 8, 8), torch.full((4,), 3.0)
    params = types.SimpleNamespace(x=x.clone(), sigma=sigma, denoiser=types.SimpleNamespace(p=generation.p, step=0))
    generation.on_cfg_denoiser(params)
    assert torch.allclose(params.x[0], generation.z0[0] * (3.0 ** 2 + 1) ** 0.5)
    assert torch.equal(params.x[1:], x[1:])
    # Forge's UNet input x / sqrt(sigma^2 + 1) is then z0 exactly.
    assert torch.allclose(params.x[0] / (3.0 ** 2 + 1) ** 0.5, generation.z0[0], atol=1e-6)


class Unit:
    def __init__(self, enabled, image=None):
        self.enabled, self.image = enabled, image

    @staticmethod
    def from_dict(d):
        return Unit(d.get("enabled", False), d.get("image"))


def test_animatediff_api_guard_passes_only_enabled_units_and_is_undone(monkeypatch):
    original = lambda p: "every unit, enabled or not"  # noqa: E731  (AnimateDiff 2.0.2-f in API mode)
    monkeypatch.setitem(sys.modules, animatediff_api.ANIMATEDIFF_UI_MODULE, types.SimpleNamespace(get_controlnet_units=original))
    monkeypatch.setitem(sys.modules, "lib_controlnet", types.ModuleType("lib_controlnet"))
    monkeypatch.setitem(sys.modules, "lib_controlnet.external_code", types.SimpleNamespace(ControlNetUnit=Unit))
    controlnet = types.SimpleNamespace(title=lambda: "ControlNet", args_from=1, args_to=4)
    enabled = Unit(True, "image")
    p = types.SimpleNamespace(is_api=True, scripts=types.SimpleNamespace(alwayson_scripts=[controlnet]),
                              script_args=("other", {"enabled": False}, enabled, Unit(False)))
    animatediff_api.guard_animatediff_api(p)
    module = sys.modules[animatediff_api.ANIMATEDIFF_UI_MODULE]
    assert module.get_controlnet_units(p) == [enabled]
    assert isinstance(p.script_args[1], Unit) and p.script_args[0] == "other"  # dicts became units in place
    animatediff_api.guard_animatediff_api(p)  # idempotent
    animatediff_api.sweep()
    assert module.get_controlnet_units is original


def test_animatediff_api_guard_leaves_ui_requests_alone(monkeypatch):
    original = lambda p: []  # noqa: E731
    monkeypatch.setitem(sys.modules, animatediff_api.ANIMATEDIFF_UI_MODULE, types.SimpleNamespace(get_controlnet_units=original))
    animatediff_api.guard_animatediff_api(types.SimpleNamespace(is_api=False))
    assert sys.modules[animatediff_api.ANIMATEDIFF_UI_MODULE].get_controlnet_units is original


def test_host_is_a1111_without_forge_modules():
    assert host.host() == host.A1111
