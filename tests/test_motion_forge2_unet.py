"""The motion core on Forge 2's own UNet class, through its block inner modifiers and group-norm wrapper.

Runs when I2V_NEW_FORGE_DIR names a Forge 2 (``backend/``) checkout whose UNet imports on this CPU
(Forge's ``backend`` needs psutil, einops, diffusers, sentencepiece); skipped otherwise.
"""
import os
import sys
import weakref
from pathlib import Path

import pytest
import torch

import models
import motion_models as mm
from i2v_adapter.motion import block_inner_modifier, check_unet_fits, group_norm_wrapper, run_with_slots

FRAMES, CHUNKS = 6, 2
TOLERANCE = 1e-4


def _import_forge_unet():
    root = os.environ.get("I2V_NEW_FORGE_DIR")
    if not root or not (Path(root) / "backend" / "nn" / "unet.py").is_file():
        pytest.skip("I2V_NEW_FORGE_DIR does not name a Forge 2 checkout")
    added = [folder for folder in (root, str(Path(root) / "packages_3rdparty")) if folder not in sys.path]
    argv, path = sys.argv[:], sys.path[:]
    sys.path += added  # appended: installed packages keep priority over the checkout's folders
    sys.argv.append("--always-cpu")  # Forge's backend reads its flags at import and would probe CUDA
    try:
        from backend.nn.unet import IntegratedUNet2DConditionModel
    except ImportError as error:
        pytest.skip(f"Forge 2's backend does not import here: {error}")
    finally:
        # Only ``backend`` stays imported; the checkout's other top-level folders (modules, ...) stay unreachable.
        sys.argv[:], sys.path[:] = argv, path
    return IntegratedUNet2DConditionModel


@pytest.fixture(scope="module")
def unets():
    """Forge 2's UNet and the ldm one, same SD1.5 block structure, same weights (same key names)."""
    forge_class = _import_forge_unet()
    ldm = mm.tiny_ldm_unet()
    forge = forge_class(
        in_channels=4, out_channels=4, model_channels=mm.TINY_CHANNELS[0], num_res_blocks=2,
        channel_mult=(1, 2, 4, 4), transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_output=[1] * 9 + [0] * 3, transformer_depth_middle=1, context_dim=models.CONTEXT_DIM,
        num_heads=4, use_spatial_transformer=True, use_linear_in_transformer=False)
    forge.load_state_dict(ldm.state_dict(), strict=True)
    return forge.eval(), ldm


@pytest.fixture(scope="module")
def sdxl_unets():
    """Forge 2's UNet and the ldm one with SDXL's block structure (output depths are listed last block first)."""
    forge_class = _import_forge_unet()
    ldm = mm.tiny_ldm_unet(sdxl_levels=True)
    forge = forge_class(
        in_channels=4, out_channels=4, model_channels=mm.TINY_SDXL_CHANNELS[0], num_res_blocks=2,
        channel_mult=(1, 2, 4), transformer_depth=[0, 0, 1, 1, 1, 1], transformer_depth_output=[0] * 3 + [1] * 6,
        transformer_depth_middle=1, context_dim=models.CONTEXT_DIM, num_heads=4, use_spatial_transformer=True,
        use_linear_in_transformer=False)
    forge.load_state_dict(ldm.state_dict(), strict=True)
    return forge.eval(), ldm


def forge_call(forge, x, t, context, modifiers, cond_or_uncond=(1, 0), norm_wrapper=None):
    options = {"cond_or_uncond": list(cond_or_uncond), "block_inner_modifiers": list(modifiers)}
    if norm_wrapper is not None:
        options["group_norm_wrapper"] = norm_wrapper
    with torch.no_grad():
        return forge(x, timesteps=t, context=context, transformer_options=options)


def test_motion_modules_attach_at_the_research_table_places(unets):
    forge, _ = unets
    motion = mm.random_motion_module("v2")
    seen = []
    run = block_inner_modifier(motion.slots())

    def record_runs(x, flag, layer, layer_index, block, options):
        out = run(x, flag, layer, layer_index, block, options)
        if out is not x:
            seen.append((options["block"], layer_index, flag, type(layer).__name__))
        return out

    check_unet_fits(forge, motion.slots())  # Forge's classes answer the same layout check as ldm's
    forge_call(forge, *models.ldm_inputs(FRAMES, CHUNKS), [record_runs])
    assert [(block, index) for block, index, _, _ in seen] == [(s.block, s.after_layer) for s in motion.slots()]
    assert all(flag == "after" and kind in ("ResBlock", "SpatialTransformer") for _, _, flag, kind in seen)
    assert len(seen) == 21


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_forge_unet_with_modifiers_equals_the_ldm_unet_with_slots(unets, version):
    forge, ldm = unets
    motion = mm.random_motion_module(version)
    inputs = models.ldm_inputs(FRAMES, CHUNKS)
    wrapper = group_norm_wrapper() if motion.groupnorm_across_frames else None
    ours = forge_call(forge, *inputs, [block_inner_modifier(motion.slots())], norm_wrapper=wrapper)
    with torch.no_grad():
        reference = run_with_slots(ldm, motion.slots(), FRAMES, *inputs,
                                   norms_across_frames=motion.groupnorm_across_frames)
        plain = ldm(*inputs)
    assert (ours - reference).abs().max() <= TOLERANCE
    assert (plain - reference).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("version", mm.SDXL_VERSIONS)
def test_sdxl_modules_on_forges_sdxl_structured_unet_equal_the_ldm_unet_with_slots(sdxl_unets, version):
    forge, ldm = sdxl_unets
    motion = mm.random_motion_module(version)
    check_unet_fits(forge, motion.slots())
    seen = []
    run = block_inner_modifier(motion.slots())

    def record_runs(x, flag, layer, layer_index, block, options):
        out = run(x, flag, layer, layer_index, block, options)
        if out is not x:
            seen.append((options["block"], layer_index))
        return out

    inputs = models.ldm_inputs(FRAMES, CHUNKS)
    wrapper = group_norm_wrapper() if motion.groupnorm_across_frames else None
    ours = forge_call(forge, *inputs, [record_runs], norm_wrapper=wrapper)
    with torch.no_grad():
        reference = run_with_slots(ldm, motion.slots(), FRAMES, *inputs,
                                   norms_across_frames=motion.groupnorm_across_frames)
        plain = ldm(*inputs)
    assert seen == [(s.block, s.after_layer) for s in motion.slots()] and len(seen) == 15
    assert (ours - reference).abs().max() <= TOLERANCE
    assert (plain - reference).abs().max() > 100 * TOLERANCE


def test_forge_unet_with_modifiers_equals_diffusers_unet_motion_model(unets):
    forge, ldm = unets
    motion = mm.random_motion_module("v2")
    motion.set_norm_across_frames(True)  # as diffusers computes the temporal norm
    reference = mm.diffusers_motion_unet(ldm, motion)
    x, t, context = models.ldm_inputs(FRAMES, CHUNKS)
    ours = forge_call(forge, x, t, context, [block_inner_modifier(motion.slots())])
    with torch.no_grad():
        theirs = reference(x.view(CHUNKS, FRAMES, *x.shape[1:]).transpose(1, 2), t[::FRAMES],
                           encoder_hidden_states=context).sample
    assert (ours - theirs.transpose(1, 2).reshape(x.shape)).abs().max() <= TOLERANCE


def test_frames_come_from_each_call_not_from_a_global(unets):
    """Forge runs cond and uncond together or apart; the frame count follows each call's chunks."""
    forge, _ = unets
    motion = mm.random_motion_module("v1")
    x, t, context = models.ldm_inputs(FRAMES, CHUNKS)
    modifiers = [block_inner_modifier(motion.slots())]
    together = forge_call(forge, x, t, context, modifiers, (1, 0), group_norm_wrapper())
    halves = [forge_call(forge, x[rows], t[rows], context[rows], modifiers, (chunk,), group_norm_wrapper())
              for chunk, rows in ((1, slice(0, FRAMES)), (0, slice(FRAMES, None)))]
    assert (together - torch.cat(halves)).abs().max() <= TOLERANCE


def test_forges_memory_manager_lets_go_of_a_motion_module_the_cache_dropped(tmp_path, monkeypatch):
    """Forge 2 keeps an entry for every model patcher it loaded: one patcher per module, released with it."""
    from types import SimpleNamespace

    _import_forge_unet()
    monkeypatch.setattr(sys, "path", sys.path + [os.environ["I2V_NEW_FORGE_DIR"]])
    from backend import memory_management

    from i2v_adapter.webui.forge2 import motion as forge2_motion

    files = {}
    for version in ("v2", "v3"):
        files[version] = tmp_path / f"mm_{version}.safetensors"
        files[version].write_bytes(b"")
    monkeypatch.setattr(forge2_motion, "load_motion_module", lambda path: mm.random_motion_module(Path(path).stem[3:]))
    trims = []
    monkeypatch.setattr(forge2_motion, "return_freed_memory", lambda: trims.append(len(forge2_motion._cache)))
    cpu = torch.device("cpu")
    unet = SimpleNamespace(model=SimpleNamespace(computation_dtype=torch.float32), load_device=cpu,
                           offload_device=cpu, add_block_inner_modifier=lambda modifier: None,
                           set_group_norm_wrapper=lambda wrapper: None, extras=[])
    unet.add_extra_model_patcher_during_sampling = unet.extras.append

    def entries(module):
        return [entry for entry in memory_management.current_loaded_models if entry.model.model is module]

    first = forge2_motion.cached_motion_module(str(files["v2"]))
    for _ in range(2):  # two samplings with the same module
        forge2_motion.add_motion_module(unet, first)
        memory_management.load_models_gpu(unet.extras[-1:])
    assert unet.extras[0] is unet.extras[1] and len(entries(first)) == 1
    second = forge2_motion.cached_motion_module(str(files["v3"]))
    assert second is not first and entries(first) == []
    # Once the sampling's clone is gone the module is freed at once, not at Python's next full collection:
    # Forge's patcher leaves a module -> lora_loader -> module cycle that the release breaks.
    dropped, first = weakref.ref(first), None
    unet.extras.clear()
    assert dropped() is None
    assert trims == [1, 1]  # after each load, with the old module already out of the cache
    forge2_motion._release(second)
    forge2_motion._cache.clear()



def _relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output.float() - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_unet_and_motion_module_lose_no_more_than_diffusers_does(unets, dtype):
    """What Forge 2 runs on a GPU with a bf16/fp16 computation dtype: UNet, motion module and inputs all in it.

    Random motion modules amplify rounding (diffusers' own UNetMotionModel drifts ~17% in bf16, ~2% in fp16 on
    these weights), so the bound is diffusers' drift in the same precision, not a fixed number."""
    import copy

    forge, ldm = unets
    motion = mm.random_motion_module("v2")
    motion.set_norm_across_frames(True)  # as diffusers computes the temporal norm
    x, t, context = models.ldm_inputs(FRAMES, CHUNKS)
    full = forge_call(forge, x, t, context, [block_inner_modifier(motion.slots())])
    ours = forge_call(copy.deepcopy(forge).to(dtype), x.to(dtype), t, context.to(dtype),
                      [block_inner_modifier(copy.deepcopy(motion).to(dtype).slots())])
    reference = mm.diffusers_motion_unet(ldm, motion).to(dtype)
    videos = x.view(CHUNKS, FRAMES, *x.shape[1:]).transpose(1, 2)
    with torch.no_grad():
        theirs = reference(videos.to(dtype), t[::FRAMES], encoder_hidden_states=context.to(dtype)).sample
    theirs = theirs.transpose(1, 2).reshape(x.shape)
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    assert _relative_error(ours, full) <= 1.5 * _relative_error(theirs, full)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_v1_groupnorm_across_frames_runs(unets, dtype):
    """v1's group norm over all frames goes through Forge's wrapper; in half precision it must still compute."""
    import copy

    forge, _ = unets
    motion = mm.random_motion_module("v1")
    x, t, context = models.ldm_inputs(FRAMES, CHUNKS)
    full = forge_call(forge, x, t, context, [block_inner_modifier(motion.slots())], norm_wrapper=group_norm_wrapper())
    half = forge_call(copy.deepcopy(forge).to(dtype), x.to(dtype), t, context.to(dtype),
                      [block_inner_modifier(copy.deepcopy(motion).to(dtype).slots())], norm_wrapper=group_norm_wrapper())
    plain = forge_call(forge, x, t, context, [])
    assert half.dtype == dtype and torch.isfinite(half).all()
    assert _relative_error(half, full) < 0.5 * _relative_error(plain, full)  # still the motion module's output
