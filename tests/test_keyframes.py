"""Keyframes: a video from picture A to picture B (and loops): attention to both, both kept clean, the prior's
mix, colour match and the windows' banks."""
import numpy as np
import pytest
import torch

import models
from i2v_adapter.anchor import clean_denoised, clean_keyframes, unet_input_scale
from i2v_adapter.color import match_colors, match_video_colors
from i2v_adapter.hooks import FirstFrameBranch, FirstFrameHooks, BranchSettings, find_attn1_layers
from i2v_adapter.layout import FrameLayout, Window, frame_zero_windows_first
from i2v_adapter.motion.windows import context_windows
from i2v_adapter.params import I2VParams, ParamsError
from i2v_adapter.prior import frame_similarity_prior, keyframe_prior


def naive_two_keyframe_branch(attention, x, weights, frames, scale):
    """Every row attends to its chunk's frame 0 and last frame: their tokens side by side, softmax written out."""
    heads = attention.heads
    head_dim = x.shape[-1] // heads
    base = attention(x)
    result = torch.empty_like(base)
    for row in range(x.shape[0]):
        start = (row // frames) * frames
        keyframes = torch.cat([x[start], x[start + frames - 1]])  # (2 tokens-lists) -> (2M, C)
        q, k, v = x[row] @ weights.q_weight.T, attention.to_k(keyframes), attention.to_v(keyframes)
        per_head = []
        for h in range(heads):
            part = slice(h * head_dim, (h + 1) * head_dim)
            scores = (q[:, part] @ k[:, part].T) * head_dim ** -0.5
            per_head.append(torch.softmax(scores, dim=-1) @ v[:, part])
        result[row] = base[row] + scale * (torch.cat(per_head, -1) @ weights.out_weight.T + weights.out_bias)
    return result


@pytest.mark.parametrize("chunks,frames", [(1, 4), (2, 5)])
def test_two_keyframe_attention_equals_concatenated_keys_and_values(chunks, frames):
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    name, attention = next(iter(find_attn1_layers(unet).items()))
    x = torch.randn(chunks * frames, 16, attention.to_q.in_features, generator=torch.Generator().manual_seed(7))
    layout = FrameLayout(frames, 0, last_frame=frames - 1)
    layout.set_window(Window(frames, 0, frames - 1))
    with torch.no_grad():
        expected = naive_two_keyframe_branch(attention, x, weights.layers[name], frames, 0.8)
        with FirstFrameHooks(unet, layout, weights, scale=0.8):
            got = attention(x)
        first_only = FrameLayout(frames, 0)
        with FirstFrameHooks(unet, first_only, weights, scale=0.8):
            one_keyframe = attention(x)
    assert (got - expected).abs().max() <= 1e-5
    assert (got - one_keyframe).abs().max() > 1e-3  # the last frame's tokens do count
    assert layout.stats["anchored"] == layout.stats["last anchored"] == 1


def test_the_anchor_keeps_both_keyframes_through_a_sampler_loop():
    """Euler steps of a k-diffusion sampler with a denoiser that pulls every frame towards noise: with the anchor
    the UNet sees z_A and z_B in the keyframe rows at every step, and the result holds both exactly."""
    generator = torch.Generator().manual_seed(1)
    frames = 6
    z_a, z_b = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    x = torch.randn(frames, 4, 8, 8, generator=generator) * 14.6
    seen = []
    for sigma in torch.linspace(14.6, 0.1, 5):
        sigmas = torch.full((frames,), float(sigma))
        model_input = clean_keyframes(x, [(z_a, [0]), (z_b, [frames - 1])], sigmas)
        unet_sees = model_input * unet_input_scale(sigmas)[:, None, None, None]
        seen.append((unet_sees[0] - z_a[0]).abs().max() + (unet_sees[-1] - z_b[0]).abs().max())
        denoised = clean_denoised(clean_denoised(torch.randn(x.shape, generator=generator), z_a), z_b, [frames - 1])
        x = denoised + (x - denoised) * (0.7 if sigma > 0.2 else 0.0)  # an Euler-like step towards denoised
    assert max(seen) <= 1e-5
    assert torch.equal(x[0], z_a[0]) and torch.equal(x[-1], z_b[0])
    assert (x[1:-1] - z_a).abs().max() > 0.1


def test_the_prior_mixes_both_priors_by_position():
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    z_a, z_b = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    frames = 7
    mixed = keyframe_prior(z_a, z_b, frames, p=0.4, blur_sigma=6.0, generator=generator())
    prior_a = frame_similarity_prior(z_a, frames, p=0.4, blur_sigma=6.0, generator=generator())
    prior_b = frame_similarity_prior(z_b, frames, p=0.4, blur_sigma=6.0, generator=generator())
    assert torch.equal(mixed[0], z_a[0]) and torch.equal(mixed[-1], z_b[0])
    for i in range(1, frames - 1):
        w = i / (frames - 1)
        assert torch.allclose(mixed[i], (1 - w) * prior_a[i] + w * prior_b[i], atol=1e-6)
    with pytest.raises(ValueError, match="at least 3 frames"):
        keyframe_prior(z_a, z_b, 2)


def test_colour_match_between_two_keyframes_keeps_both_and_mixes_by_position():
    rng = np.random.default_rng(0)
    first = np.clip(rng.normal((200, 60, 60), 20, (16, 16, 3)), 0, 255).astype(np.uint8)
    last = np.clip(rng.normal((60, 60, 200), 20, (16, 16, 3)), 0, 255).astype(np.uint8)
    middle = np.clip(rng.normal((120, 120, 120), 30, (16, 16, 3)), 0, 255).astype(np.uint8)
    frames = [first, middle, middle, middle, last]
    matched = match_video_colors(frames, ends_on_last=True)
    assert np.array_equal(matched[0], first) and np.array_equal(matched[-1], last)
    to_first, to_last = match_colors(middle, first).astype(float), match_colors(middle, last).astype(float)
    expected = np.clip(np.rint(0.5 * to_first + 0.5 * to_last), 0, 255)
    assert np.abs(matched[2].astype(float) - expected).max() <= 1
    assert matched[1][..., 0].mean() > matched[3][..., 0].mean()  # redder near A, bluer near B


@pytest.mark.parametrize("frames,context,overlap", [(24, 8, 2), (16, 8, 4), (32, 16, 4)])
def test_every_window_of_every_step_sees_both_keyframes(frames, context, overlap):
    """Windows run frame 0's first, then the last frame's: the others read both from the bank; frame 0's window
    reads the last frame's keys/values of the step before, at the first step those of a priming run."""
    attention = next(iter(find_attn1_layers(models.ldm_unet()).values()))
    layout = FrameLayout(context, 0, keep_reference=True, last_frame=frames - 1)
    branch = FirstFrameBranch("layer", attention, layout, None, BranchSettings(1.0))
    windows = frame_zero_windows_first(context_windows(frames, context, overlap), frames - 1)
    assert 0 in windows[0] and frames - 1 in windows[1]
    x = torch.randn(2 * context, 4, attention.to_q.in_features)
    seen, primed = [], []
    with torch.no_grad():
        for step in range(3):
            layout.begin_step(step)
            prime = layout.priming_window(windows)
            if prime is not None:  # as the hosts do: once, its result dropped
                primed.append(step)
                with layout.priming():
                    layout.set_window(Window.from_frames(prime, frames - 1))
                    branch.reference_for(x)
            for window in windows:
                layout.set_window(Window.from_frames(window, frames - 1))
                keys, _ = branch.reference_for(x)
                seen.append((step, window[0], keys.shape[1] // x.shape[1]))  # keyframes attended to
    assert primed == [0] and all(count == 2 for _, _, count in seen)
    stats = layout.stats
    assert stats["last missing"] == 0 and stats["last from the previous step"] == 2 and stats["priming calls"] > 0
    assert stats["unreferenced"] == 0


def test_keyframe_requests_that_cannot_work_are_refused():
    with pytest.raises(ParamsError, match="loop ends the video on the first picture"):
        I2VParams.from_dict({"loop": True, "last_image": "aGVsbG8="})
    with pytest.raises(ParamsError, match="last_image must be"):
        I2VParams.from_dict({"last_image": 5})
    params = I2VParams.from_dict({"loop": "true"})
    assert params.keyframed and not params.has_last_image and params.infotext()["I2V-Adapter loop"] == "True"
    assert I2VParams.from_dict({"last_image": ""}).keyframed is False
    assert I2VParams.from_dict({"last_image": "aGVsbG8="}).infotext()["I2V-Adapter last frame"] == "picture"


def test_animatediffs_writer_leaves_out_a_loops_repeated_frame_until_the_next_sweep(monkeypatch):
    import sys
    import types

    from i2v_adapter.webui import animatediff, lifecycle

    class AnimateDiffOutput:  # its writer passes each video's frames through _add_reverse first
        def _add_reverse(self, params, frame_list):
            return frame_list + ["reversed"] if params == "A" else frame_list

    module = types.ModuleType(animatediff.OUTPUT_MODULE)
    module.AnimateDiffOutput = AnimateDiffOutput
    monkeypatch.setitem(sys.modules, animatediff.OUTPUT_MODULE, module)
    original = AnimateDiffOutput.__dict__["_add_reverse"]
    animatediff.write_loops_once()
    animatediff.write_loops_once()  # a second loop generation does not wrap twice
    assert AnimateDiffOutput()._add_reverse("N", [0, 1, 2, 3]) == [0, 1, 2]
    assert AnimateDiffOutput()._add_reverse("A", [0, 1, 2, 3]) == [0, 1, 2, "reversed"]
    lifecycle.sweep()
    assert AnimateDiffOutput.__dict__["_add_reverse"] is original
    assert AnimateDiffOutput()._add_reverse("N", [0, 1, 2, 3]) == [0, 1, 2, 3]


def test_the_loop_axis_of_the_xyz_plot_sets_loop_and_keeps_the_other_axes():
    from types import SimpleNamespace

    from i2v_adapter.webui import xyz

    p = SimpleNamespace()
    xyz._apply("t0")(p, "0.8", None)
    xyz._apply(xyz.MOTION_LORA_STRENGTH)(p, "0.5", None)
    xyz._apply_switch(xyz.LOOP)(p, "True", None)
    assert xyz.overrides(p) == {"t0": 0.8, "loop": True}
    assert getattr(p, xyz.ATTRIBUTE)[xyz.MOTION_LORA_STRENGTH] == 0.5
    with pytest.raises(ParamsError, match="loop must be true or false"):
        xyz._apply_switch(xyz.LOOP)(p, "maybe", None)


def test_the_bank_keeps_only_the_last_keyframes_entries_for_the_next_step():
    layout = FrameLayout(4, 0, keep_reference=True, last_frame=7)
    keys = torch.zeros(2, 3, 8)
    layout.begin_step(0)
    layout.bank.store("layer", 0, keys, keys)  # frame 0's
    layout.bank.store("layer", 0, keys, keys, "last")
    layout.begin_step(1)
    assert layout.bank.fetch_previous("layer", 0, 2) is not None
    assert layout.bank.fetch_previous("layer", 0, 2, "first") is None and len(layout.bank) == 0
