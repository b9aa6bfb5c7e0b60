"""The branch under other extensions that touch self-attention (ControlNet reference-only and similar)."""
import torch

from i2v_adapter.hooks import FirstFrameHooks, find_attn1_layers
from i2v_adapter.layout import FrameLayout, Window

import models


def _first_attn1():
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    name, attention = next(iter(find_attn1_layers(unet).items()))
    return unet, weights, attention


def test_branch_is_added_when_self_attention_is_extended_with_a_context():
    # ControlNet's reference-only replaces the transformer block's forward and calls
    # attn1(x, context=x), or attn1(x, context=cat([x, reference tokens])) in its read pass.
    unet, weights, attention = _first_attn1()
    torch.manual_seed(3)
    x = torch.randn(8, 16, attention.to_q.in_features)
    reference_tokens = torch.randn(8, 16, attention.to_q.in_features)
    extended = torch.cat([x, reference_tokens], dim=1)
    with torch.no_grad():
        plain = {"none": attention(x), "self": attention(x, context=x), "extended": attention(x, context=extended),
                 "copy": attention(x, context=x.clone())}
        with FirstFrameHooks(unet, FrameLayout(4, 0), weights):
            hooked = {"none": attention(x), "self": attention(x, context=x),
                      "extended": attention(x, context=extended), "copy": attention(x, context=x.clone())}
    branch = hooked["none"] - plain["none"]
    assert branch.abs().max() > 1e-3
    for case in ("self", "extended", "copy"):
        assert torch.allclose(hooked[case] - plain[case], branch, atol=1e-5), case


def test_a_foreign_context_is_left_alone():
    unet, weights, attention = _first_attn1()
    torch.manual_seed(4)
    x = torch.randn(8, 16, attention.to_q.in_features)
    foreign = torch.randn(8, 24, attention.to_q.in_features)
    with torch.no_grad():
        plain = attention(x, context=foreign)
        with FirstFrameHooks(unet, FrameLayout(4, 0), weights):
            hooked = attention(x, context=foreign)
    assert torch.equal(plain, hooked)


def test_skipped_passes_are_left_alone_and_not_counted():
    # e.g. ControlNet's reference write pass: its rows are the reference image, not the video.
    unet, weights, attention = _first_attn1()
    torch.manual_seed(5)
    x = torch.randn(8, 16, attention.to_q.in_features)
    writing = {"on": True}
    layout = FrameLayout(4, 0, keep_reference=True, skip_call=lambda: writing["on"])
    with torch.no_grad():
        plain = attention(x)
        with FirstFrameHooks(unet, layout, weights):
            skipped = attention(x)
            writing["on"] = False
            applied = attention(x)
    assert torch.equal(skipped, plain)
    assert not torch.allclose(applied, plain, atol=1e-3)
    assert layout.stats["anchored"] == 1 and len(layout.bank) == 1


def test_each_call_of_a_window_reads_the_matching_call_of_the_frame_zero_window():
    # With cond and uncond in separate UNet calls, a window calls each layer twice; the second
    # window's cond call must read frame 0's cond keys, its uncond call the uncond keys.
    unet, weights, attention = _first_attn1()
    torch.manual_seed(6)
    channels = attention.to_q.in_features
    cond, uncond = torch.randn(8, 16, channels), torch.randn(8, 16, channels)  # frames 0..7 each
    with torch.no_grad():
        together_layout = FrameLayout(5, 0)
        with FirstFrameHooks(unet, together_layout, weights):
            expected_cond = attention(cond[[0, 4, 5, 6, 7]])[1:]
            expected_uncond = attention(uncond[[0, 4, 5, 6, 7]])[1:]

        layout = FrameLayout(4, 0, keep_reference=True)
        with FirstFrameHooks(unet, layout, weights):
            layout.begin_step(0)
            layout.set_window(Window.from_frames([0, 1, 2, 3]))
            attention(cond[:4])
            attention(uncond[:4])
            layout.set_window(Window.from_frames([4, 5, 6, 7]))
            got_cond = attention(cond[4:])
            got_uncond = attention(uncond[4:])
    assert torch.allclose(got_cond, expected_cond, atol=1e-5)
    assert torch.allclose(got_uncond, expected_uncond, atol=1e-5)
    assert layout.stats["banked"] == 2
