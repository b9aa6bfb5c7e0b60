"""The first-frame branch against a naive per-frame reference, and hook bookkeeping."""
import pytest
import torch

from i2v_adapter.hooks import FirstFrameHooks, find_attn1_layers, installed_hook_count, remove_all_hooks
from i2v_adapter.layout import FrameLayout

import models


def naive_branch(attention, x, weights, chunk_length, position, scale):
    """Loop over rows and heads; softmax written out. Trained mode: out + s * to_out_ff(attn)."""
    heads = attention.heads
    rows, tokens, channels = x.shape
    head_dim = channels // heads
    base = attention(x)
    result = torch.empty_like(base)
    for row in range(rows):
        anchor = (row // chunk_length) * chunk_length + position
        q = x[row] @ weights.q_weight.T
        k = attention.to_k(x[anchor])
        v = attention.to_v(x[anchor])
        per_head = []
        for h in range(heads):
            sl = slice(h * head_dim, (h + 1) * head_dim)
            scores = (q[:, sl] @ k[:, sl].T) * head_dim ** -0.5
            per_head.append(torch.softmax(scores, dim=-1) @ v[:, sl])
        attended = torch.cat(per_head, dim=-1)
        result[row] = base[row] + scale * (attended @ weights.out_weight.T + weights.out_bias)
    return result


@pytest.mark.parametrize("chunks,frames,position", [(1, 4, 0), (2, 4, 0), (2, 5, 3), (1, 3, 2)])
def test_branch_equals_naive_reference(chunks, frames, position):
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    name, attention = next(iter(find_attn1_layers(unet).items()))
    torch.manual_seed(7)
    x = torch.randn(chunks * frames, 16, attention.to_q.in_features)
    layout = FrameLayout(frames, position)
    with torch.no_grad():
        expected = naive_branch(attention, x, weights.layers[name], frames, position, scale=0.8)
        with FirstFrameHooks(unet, layout, weights, scale=0.8):
            got = attention(x)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(got, attention(x), atol=1e-3)  # the branch did something


def naive_training_free(attention, x, chunk_length, position, scale):
    base = attention(x)
    result = torch.empty_like(base)
    for row in range(x.shape[0]):
        anchor = (row // chunk_length) * chunk_length + position
        # Attention of this frame to frame 0 alone: attn1 with frame 0 as the context.
        cross = attention(x[row : row + 1], context=x[anchor : anchor + 1])
        result[row] = (1 - scale) * base[row] + scale * cross[0]
    return result


def test_training_free_equals_attn1_with_frame_zero_as_context():
    unet = models.ldm_unet()
    attention = next(iter(find_attn1_layers(unet).values()))
    torch.manual_seed(8)
    x = torch.randn(8, 16, attention.to_q.in_features)
    with torch.no_grad():
        expected = naive_training_free(attention, x, 4, 1, scale=0.6)
        with FirstFrameHooks(unet, FrameLayout(4, 1), None, scale=0.6):
            got = attention(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_hooks_cover_every_spatial_attn1_only():
    unet = models.ldm_unet()
    with FirstFrameHooks(unet, FrameLayout(2), models.random_adapter(unet)) as hooks:
        assert len(hooks.layers) == 16
        assert installed_hook_count(unet) == 16
        hooked = {p for p, m in unet.named_modules() if m._forward_hooks}
        assert all(p.endswith("attn1") for p in hooked)
    assert installed_hook_count(unet) == 0


def test_motion_module_attention_is_not_hooked():
    from diffusers import MotionAdapter, UNetMotionModel

    unet2d = models.diffusers_unet()
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2,
                            motion_num_attention_heads=4, motion_norm_num_groups=8,
                            motion_max_seq_length=16)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    temporal = [p for p, _ in unet.named_modules() if "motion_modules" in p and p.endswith("attn1")]
    assert temporal  # diffusers' motion modules do have attn1 modules
    layers = find_attn1_layers(unet)
    assert sorted(layers) == sorted(find_attn1_layers(unet2d))
    assert not any(m is unet.get_submodule(p) for p in temporal for m in layers.values())


def test_zero_out_and_zero_scale_are_bit_identical():
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    x, t, context = models.ldm_inputs(frames=4)
    with torch.no_grad():
        plain = unet(x, t, context)
        with FirstFrameHooks(unet, FrameLayout(4), models.zero_out_adapter(weights)):
            zero_out = unet(x, t, context)
        with FirstFrameHooks(unet, FrameLayout(4), weights, scale=0.0):
            zero_scale = unet(x, t, context)
        with FirstFrameHooks(unet, FrameLayout(4), None, scale=0.0):
            zero_training_free = unet(x, t, context)
        with FirstFrameHooks(unet, FrameLayout(4), weights, scale=1.0):
            active = unet(x, t, context)
    assert torch.equal(plain, zero_out)
    assert torch.equal(plain, zero_scale)
    assert torch.equal(plain, zero_training_free)
    assert not torch.allclose(plain, active, atol=1e-4)


def test_install_then_remove_is_bit_identical():
    unet = models.ldm_unet()
    x, t, context = models.ldm_inputs(frames=4)
    with torch.no_grad():
        before = unet(x, t, context)
        hooks = FirstFrameHooks(unet, FrameLayout(4), models.random_adapter(unet)).install()
        during = unet(x, t, context)
        hooks.remove()
        after = unet(x, t, context)
    assert not torch.allclose(before, during, atol=1e-4)
    assert torch.equal(before, after)
    assert installed_hook_count(unet) == 0


def test_hooks_removed_when_forward_raises():
    unet = models.ldm_unet()
    x, t, context = models.ldm_inputs(frames=4)
    with pytest.raises(RuntimeError):
        with FirstFrameHooks(unet, FrameLayout(4), models.random_adapter(unet)):
            unet(x, t, context[:, :, :5])  # wrong context width: the forward raises
    assert installed_hook_count(unet) == 0


def test_sweep_removes_hooks_even_without_the_hook_object():
    unet = models.ldm_unet()
    x, t, context = models.ldm_inputs(frames=4)
    with torch.no_grad():
        before = unet(x, t, context)
        FirstFrameHooks(unet, FrameLayout(4), models.random_adapter(unet)).install()
        # A reload may lose every reference: the tag scan still finds the hooks.
        from i2v_adapter import hooks as hooks_module
        hooks_module._installed.clear()
        assert remove_all_hooks(unet) == 16
        assert torch.equal(before, unet(x, t, context))


def test_rows_not_multiple_of_chunk_are_untouched():
    unet = models.ldm_unet()
    x, t, context = models.ldm_inputs(frames=3, chunks=1)
    layout = FrameLayout(4)
    with torch.no_grad():
        plain = unet(x, t, context)
        with FirstFrameHooks(unet, layout, models.random_adapter(unet)):
            hooked = unet(x, t, context)
    assert torch.equal(plain, hooked)
    assert layout.stats["untouched"] == 16


def test_cross_attention_calls_are_left_alone():
    unet = models.ldm_unet()
    attention = next(iter(find_attn1_layers(unet).values()))
    x = torch.randn(4, 16, attention.to_q.in_features)
    with torch.no_grad():
        plain = attention(x, context=x.flip(0))
        with FirstFrameHooks(unet, FrameLayout(4), models.random_adapter(unet)):
            hooked = attention(x, context=x.flip(0))
    assert torch.equal(plain, hooked)


def test_diffusers_unet_hooks_map_to_ldm_names_and_change_output():
    unet = models.diffusers_unet()
    weights = models.random_adapter(unet)
    x = torch.randn(8, 4, 8, 8)
    context = torch.randn(8, 7, models.CONTEXT_DIM)
    with torch.no_grad():
        plain = unet(x, 500, context).sample
        with FirstFrameHooks(unet, FrameLayout(4), weights):
            hooked = unet(x, 500, context).sample
        again = unet(x, 500, context).sample
    assert not torch.allclose(plain, hooked, atol=1e-4)
    assert torch.equal(plain, again)


def test_weights_that_do_not_fit_are_refused():
    from i2v_adapter.weights.adapter import WeightsError

    small, wide = models.ldm_unet(32), models.ldm_unet(64)
    with pytest.raises(WeightsError, match="channel mismatch: input_blocks.1.1.transformer_blocks.0.attn1"):
        FirstFrameHooks(wide, FrameLayout(4), models.random_adapter(small))
    weights = models.random_adapter(small)
    del weights.layers["middle_block.1.transformer_blocks.0.attn1"]
    with pytest.raises(WeightsError, match="missing layers: middle_block.1.transformer_blocks.0.attn1"):
        FirstFrameHooks(small, FrameLayout(4), weights)


def test_one_unet_call_per_layer_uses_one_attention_call(monkeypatch):
    from i2v_adapter import attention as attention_module

    calls = []
    real = attention_module.F.scaled_dot_product_attention

    def counting(q, k, v, **kwargs):
        calls.append((q.shape, k.shape))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counting)
    unet = models.ldm_unet()
    x, t, context = models.ldm_inputs(frames=4, chunks=2)
    with torch.no_grad(), FirstFrameHooks(unet, FrameLayout(4), models.random_adapter(unet)):
        unet(x, t, context)
    assert len(calls) == 16
    # keys hold one frame per chunk: 2 chunks, never repeated 4 times
    assert all(k[0] == 2 for _, k in calls)


def _count_calls(modules):
    counts = {"calls": 0}

    def count(module, args):
        counts["calls"] += 1

    handles = [module.register_forward_pre_hook(count) for module in modules]
    return counts, handles


@pytest.mark.parametrize("scale", [0.6, 1.0])
def test_training_free_reuses_attn1s_query_and_output_projection(scale, monkeypatch):
    """One to_q and one to_out per attn1 call (not two), and the same result as adding the branch afterwards."""
    from i2v_adapter import hooks as hooks_module

    unet = models.ldm_unet()
    layers = find_attn1_layers(unet)
    x, t, context = models.ldm_inputs(frames=4, chunks=2)
    queries, query_handles = _count_calls(module.to_q for module in layers.values())
    outs, out_handles = _count_calls(module.to_out[0] for module in layers.values())
    with torch.no_grad():
        with FirstFrameHooks(unet, FrameLayout(4, 1), None, scale=scale) as hooks:
            inside = unet(x, t, context)
            assert installed_hook_count(unet) == 4 * 16
        assert installed_hook_count(unet) == 0
        assert (queries["calls"], outs["calls"]) == (16, 16)
        assert hooks.layout.stats["anchored"] == 16

        # The same branch added after attn1 (what hosts without module calls get): two to_q, two to_out.
        original_register = hooks_module._TrainingFreeCall.register

        def attn1_hooks_only(self, attention):
            handles = original_register(self, attention)
            for handle in handles[1:3]:  # the to_q and to_out hooks
                handle.remove()
            return handles[:1] + handles[3:]

        monkeypatch.setattr(hooks_module._TrainingFreeCall, "register", attn1_hooks_only)
        with FirstFrameHooks(unet, FrameLayout(4, 1), None, scale=scale):
            afterwards = unet(x, t, context)
    for handle in query_handles + out_handles:
        handle.remove()
    assert (queries["calls"], outs["calls"]) == (16 + 32, 16 + 32)
    assert torch.allclose(inside, afterwards, atol=1e-5), (inside - afterwards).abs().max()
    assert not torch.allclose(inside, unet(x, t, context), atol=1e-4)
