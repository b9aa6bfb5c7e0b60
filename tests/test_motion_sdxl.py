"""SDXL motion modules (AnimateDiff-SDXL, HotShot-XL): files told from their keys, placement in SDXL's block
structure, equality with diffusers' UNetMotionModel, and HotShot's temporal layer against its equations."""
import math

import pytest
import torch
import torch.nn.functional as F

import models
import motion_models as mm
from i2v_adapter.motion import load_motion_module, run_with_slots
from i2v_adapter.motion.schedule import ANIMATEDIFF_BETAS, ANIMATEDIFF_SDXL_BETAS
from test_motion_files import assert_same_weights, save
from test_motion_unet import CHUNKS, FRAMES, TOLERANCE, PerFrame, Recorder, diffusers_output

# (block, after layer, channels, spatial size) of every SDXL motion module for an 8x8 latent, in call order.
SDXL_PLACES = (
    [(("input", b), 0, 32, 8) for b in (1, 2)] + [(("input", b), 1, 64, 4) for b in (4, 5)]
    + [(("input", b), 1, 128, 2) for b in (7, 8)]
    # output 2 and 5: after their SpatialTransformer, before the Upsample (2 and 4 px, not 4 and 8)
    + [(("output", b), 1, 128, 2) for b in (0, 1, 2)] + [(("output", b), 1, 64, 4) for b in (3, 4, 5)]
    + [(("output", b), 0, 32, 8) for b in (6, 7, 8)]
)


@pytest.fixture(scope="module")
def sdxl_unet():
    return mm.tiny_ldm_unet(sdxl_levels=True)


@pytest.fixture(scope="module")
def inputs():
    return models.ldm_inputs(FRAMES, CHUNKS)


@pytest.mark.parametrize("pickle_it", [False, True])
def test_animatediff_sdxl_is_told_from_its_keys(tmp_path, pickle_it):
    tensors = mm.sdxl_state_dict()
    module = load_motion_module(save(tensors, tmp_path / "motion.ckpt", pickle_it))
    assert (module.version, module.base.name, module.max_frames, module.mid_block) == ("SDXL beta", "SDXL", 32, None)
    assert module.channels == mm.TINY_SDXL_CHANNELS and len(module.slots()) == 15
    assert module.schedule == ANIMATEDIFF_SDXL_BETAS and not module.groupnorm_across_frames
    assert module.native_window == 32 and module.describe().startswith("AnimateDiff-SDXL beta (original), 15 modules")
    assert_same_weights(module, tensors)


def test_hotshot_xl_is_told_from_its_keys_whatever_the_file_name(tmp_path):
    released = mm.hotshot_state_dict()
    assert any(".temporal_attentions.1.proj_in." in key for key in released)
    module = load_motion_module(save(released, tmp_path / "mm_sd_v15_v2.safetensors"))
    assert (module.version, module.base.name, module.max_frames, module.native_window) == ("HotShot-XL", "SDXL", 24, 8)
    assert module.groupnorm_across_frames and module.schedule == ANIMATEDIFF_BETAS and module.source == "hotshot"
    state = module.state_dict()
    table = "up_blocks.2.temporal_attentions.2.transformer_blocks.0.attention_blocks.1.pos_encoder.positional_encoding"
    ours = "up_blocks.2.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    assert torch.equal(state[ours], released[table])
    assert len(state) == len(released) == 15 * 28


def test_sdxl_modules_run_after_the_right_layer_of_each_sdxl_block(sdxl_unet, inputs):
    motion = mm.random_motion_module("SDXL beta")
    assert [(s.block, s.after_layer) for s in motion.slots()] == [(b, layer) for b, layer, _, _ in SDXL_PLACES]
    log = []
    slots = [type(s)(s.block, s.after_layer, Recorder(s.module, s.block, log), s.channels) for s in motion.slots()]
    with torch.no_grad():
        run_with_slots(sdxl_unet, slots, FRAMES, *inputs)
    assert log == [(block, channels, size, FRAMES) for block, _, channels, size in SDXL_PLACES]


def test_an_sd15_module_does_not_fit_an_sdxl_unet_nor_the_reverse(sdxl_unet, inputs):
    with pytest.raises(ValueError, match="does not have the UNet layout the motion module needs"):
        run_with_slots(sdxl_unet, mm.random_motion_module("v3").slots(), FRAMES, *inputs)
    with pytest.raises(ValueError, match="does not have the UNet layout the motion module needs"):
        run_with_slots(mm.tiny_ldm_unet(), mm.random_motion_module("SDXL beta").slots(), FRAMES, *inputs)


def test_animatediff_sdxl_equals_diffusers_unet_motion_model(sdxl_unet, inputs):
    """diffusers' UNetMotionModel from an SDXL-structured UNet2DConditionModel and a MotionAdapter of the same
    geometry and weights: the whole UNet output agrees (temporal norms per frame, as AnimateDiff's code)."""
    motion = mm.random_motion_module("SDXL beta")
    unet2d = mm.diffusers_unet_like(sdxl_unet)
    assert [type(b).__name__ for b in unet2d.down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D",
                                                              "CrossAttnDownBlock2D"]
    reference = mm.diffusers_motion_unet(sdxl_unet, motion, unet2d)
    for transformer in reference.modules():
        if type(transformer).__name__ == "AnimateDiffTransformer3D":
            transformer.norm = PerFrame(transformer.norm)
    with torch.no_grad():
        ours = run_with_slots(sdxl_unet, motion.slots(), FRAMES, *inputs)
        plain = sdxl_unet(*inputs)
    theirs = diffusers_output(reference, *inputs)
    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (plain - theirs).abs().max() > 100 * TOLERANCE


def _hotshot_layer_by_its_equations(weights: dict, prefix: str, x: torch.Tensor, frames: int) -> torch.Tensor:
    """HotShot-XL's TransformerTemporal written out from its published equations, one frame sequence per pixel:
    GroupNorm per frame -> proj_in -> 2 x (LayerNorm, + sinusoid, 8-head softmax attention over frames, to_out,
    + residual) -> LayerNorm, GEGLU feed-forward, + residual -> proj_out -> + x. Keys in its released names."""
    w = {key[len(prefix):]: value.double() for key, value in weights.items() if key.startswith(prefix)}
    x = x.double()
    rows, channels, height, width = x.shape
    h = F.group_norm(x, 32, w["norm.weight"], w["norm.bias"], eps=1e-6)
    h = h.view(rows // frames, frames, channels, height * width).permute(0, 3, 1, 2)  # (b, pixels, frames, c)
    h = h @ w["proj_in.weight"].T + w["proj_in.bias"]
    block = "transformer_blocks.0."
    heads, head_channels = 8, channels // 8
    for a in (0, 1):
        attention = f"{block}attention_blocks.{a}."
        n = F.layer_norm(h, (channels,), w[f"{block}norms.{a}.weight"], w[f"{block}norms.{a}.bias"])
        n = n + w[f"{attention}pos_encoder.positional_encoding"][0, :frames]
        q, k, v = (n @ w[f"{attention}to_{name}.weight"].T for name in "qkv")
        split = lambda t: t.view(*t.shape[:-1], heads, head_channels).transpose(-2, -3)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(head_channels)
        out = (scores.softmax(-1) @ split(v)).transpose(-2, -3).reshape(h.shape)
        h = h + out @ w[f"{attention}to_out.0.weight"].T + w[f"{attention}to_out.0.bias"]
    n = F.layer_norm(h, (channels,), w[f"{block}ff_norm.weight"], w[f"{block}ff_norm.bias"])
    value, gate = (n @ w[f"{block}ff.net.0.proj.weight"].T + w[f"{block}ff.net.0.proj.bias"]).chunk(2, -1)
    h = h + (value * F.gelu(gate)) @ w[f"{block}ff.net.2.weight"].T + w[f"{block}ff.net.2.bias"]
    h = h @ w["proj_out.weight"].T + w["proj_out.bias"]
    return h.permute(0, 2, 3, 1).reshape(rows, channels, height, width) + x


@pytest.mark.parametrize("level,index", [("down_blocks.0", 1), ("up_blocks.0", 2)])
def test_hotshot_temporal_layer_equals_its_equations(tmp_path, level, index):
    released = mm.hotshot_state_dict()
    module = load_motion_module(save(released, tmp_path / "hsxl_temporal_layers.safetensors"))
    layer = (module.down_blocks if level.startswith("down") else module.up_blocks)[int(level[-1])].motion_modules[index]
    x = torch.randn(2 * 8, layer.channels, 3, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = layer(x, 8)
    reference = _hotshot_layer_by_its_equations(released, f"{level}.temporal_attentions.{index}.", x, 8)
    # fp32 against float64: outputs reach about 100 with these weights, so the bound is relative.
    assert (ours.double() - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert (ours - x).abs().max() > 1e-2  # the layer does something
