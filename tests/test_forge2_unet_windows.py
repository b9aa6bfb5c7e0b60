"""The Forge 2 glue on Forge 2's own UNet class: windows through the UNet function wrapper, with the motion
module's slots and the first-frame patches, as Forge calls them (``apply_model(x, t, **c)``).

Runs when I2V_NEW_FORGE_DIR names a Forge 2 checkout whose ``backend`` imports on this CPU; skipped otherwise.
"""
import pytest
import torch

import models
import motion_models as mm
from i2v_adapter.hooks import FirstFrameHooks
from i2v_adapter.layout import FrameLayout, Window
from i2v_adapter.motion import block_inner_modifier, context_windows
from i2v_adapter.webui.forge.generation import first_frame_patches, transformer_key
from i2v_adapter.webui.forge2.windows import window_wrapper
from test_motion_forge2_unet import unets  # noqa: F401  (the fixture: Forge's UNet and the ldm one)

FRAMES, CHUNKS = 8, 2


def forge_apply(forge, modifiers, patches):
    """``apply_model`` as Forge's KModel hands it to the wrapper: per-row tensors plus transformer_options."""
    attn1_patch, attn1_output_patch = patches

    def apply_model(x, timestep, c_crossattn, transformer_options, **_):
        options = {**transformer_options, "block_inner_modifiers": list(modifiers),
                   "patches": {"attn1_patch": [attn1_patch], "attn1_output_patch": [attn1_output_patch]}}
        with torch.no_grad():
            return forge(x, timesteps=timestep, context=c_crossattn, transformer_options=options)

    return apply_model


def wrapper_args(x, t, context):
    marks = torch.tensor([1.0] * FRAMES + [0.0] * FRAMES)
    options = {"cond_or_uncond": [1, 0], "cond_mark": marks, "sigmas": t[:FRAMES]}
    return {"input": x, "timestep": t, "c": {"c_crossattn": context, "transformer_options": options},
            "cond_or_uncond": [1, 0]}


def test_windows_on_forge_unet_anchor_every_window_and_match_a_call_per_window(unets):  # noqa: F811
    forge, _ = unets
    motion = mm.random_motion_module("v2")
    modifiers = [block_inner_modifier(motion.slots())]
    weights = models.random_adapter(forge)
    windows = context_windows(FRAMES, 4, 1)  # [0..3], [3..6], [4..7]: the last two lack frame 0
    layout = FrameLayout(4, 0, keep_reference=True)
    hooks = FirstFrameHooks(forge, layout, weights, 1.0)
    branches = {transformer_key(name): branch for name, branch in hooks.branches().items()}
    apply_model = forge_apply(forge, modifiers, first_frame_patches(branches))
    x, t, context = models.ldm_inputs(FRAMES, CHUNKS)

    layout.begin_step(0)
    out = window_wrapper(windows, FRAMES, layout)(apply_model, wrapper_args(x, t, context))
    assert layout.stats["anchored"] == len(branches) and layout.stats["banked"] == 2 * len(branches)
    assert layout.stats["unreferenced"] == layout.stats["untouched"] == 0

    # The first window alone, called directly: its frames that no other window holds come out the same.
    rows = [chunk * FRAMES + frame for chunk in range(CHUNKS) for frame in windows[0]]
    layout.set_window(Window.from_frames(windows[0]))
    alone = apply_model(x[rows], t[rows], context[rows], {"cond_or_uncond": [1, 0]})
    only_first = [i for i, frame in enumerate(windows[0] * CHUNKS) if frame < 3]
    assert (out[[rows[i] for i in only_first]] - alone[only_first]).abs().max() <= 1e-5

    # Without the bank, windows without frame 0 would differ: the branch really reads frame 0 there.
    layout.bank.clear()
    layout.begin_step(1)
    layout.keep_reference = False
    unanchored = window_wrapper(windows, FRAMES, layout)(apply_model, wrapper_args(x, t, context))
    assert (unanchored[FRAMES - 1] - out[FRAMES - 1]).abs().max() > 1e-3
