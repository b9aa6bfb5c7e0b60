"""Motion modules in an ldm UNet: placement, exact undo, and equality with diffusers' UNetMotionModel."""
import dataclasses

import pytest
import torch
from torch import nn

import models
import motion_models as mm
from i2v_adapter.motion import FrameLimitError, groupnorm_across_frames, inserted_slots, run_with_slots
from i2v_adapter.motion import architecture
from i2v_adapter.motion.group_norm import AcrossFrames

FRAMES, CHUNKS = 6, 2
TOLERANCE = 1e-4
# (block, channels, spatial size) each motion module sees for an 8x8 latent, in call order.
PLACES = (
    [(("input", b), 32, 8) for b in (1, 2)] + [(("input", b), 64, 4) for b in (4, 5)]
    + [(("input", b), 128, 2) for b in (7, 8)] + [(("input", b), 128, 1) for b in (10, 11)]
    + [(("middle", 0), 128, 1)]
    # output 2, 5, 8: before their Upsample (1, 2 and 4 px, not 2, 4 and 8)
    + [(("output", b), 128, 1) for b in (0, 1, 2)] + [(("output", b), 128, 2) for b in (3, 4, 5)]
    + [(("output", b), 64, 4) for b in (6, 7, 8)] + [(("output", b), 32, 8) for b in (9, 10, 11)]
)


@pytest.fixture(scope="module")
def unet():
    return mm.tiny_ldm_unet()


@pytest.fixture(scope="module")
def unet2d(unet):
    return mm.diffusers_unet_like(unet)


@pytest.fixture(scope="module")
def inputs():
    return models.ldm_inputs(FRAMES, CHUNKS)


class Recorder(nn.Module):
    def __init__(self, module, block, log):
        super().__init__()
        self.module, self.block, self.log = module, block, log

    def forward(self, x, frames):
        self.log.append((self.block, x.shape[1], x.shape[-1], frames))
        return self.module(x, frames)


def diffusers_output(reference, x, t, context):
    sample = x.view(CHUNKS, FRAMES, *x.shape[1:]).transpose(1, 2)
    with torch.no_grad():
        out = reference(sample, t[::FRAMES], encoder_hidden_states=context).sample
    return out.transpose(1, 2).reshape(x.shape)


class PerFrame(nn.Module):
    """A GroupNorm on diffusers' 5-D (b, c, f, h, w) input, applied to each frame alone (AnimateDiff)."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        b, c, f, h, w = x.shape
        return self.norm(x.transpose(1, 2).reshape(b * f, c, h, w)).reshape(b, f, c, h, w).transpose(1, 2)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_each_motion_module_runs_at_its_place(unet, inputs, version):
    motion = mm.random_motion_module(version)
    log = []
    slots = [dataclasses.replace(s, module=Recorder(s.module, s.block, log)) for s in motion.slots()]
    with torch.no_grad():
        run_with_slots(unet, slots, FRAMES, *inputs)
    expected = [(block, channels, size, FRAMES) for block, channels, size in PLACES
                if version == "v2" or block[0] != "middle"]
    assert log == expected


def test_the_unet_is_left_exactly_as_before_also_after_an_error(unet, inputs):
    motion = mm.random_motion_module("v1")
    names = [name for name, _ in unet.named_modules()]
    with torch.no_grad():
        plain = unet(*inputs)
        with pytest.raises(FrameLimitError, match="at most 24 frames"):
            run_with_slots(unet, motion.slots(), 2 * FRAMES * 3, *models.ldm_inputs(2 * FRAMES * 3, 1),
                           norms_across_frames=True)
        assert [name for name, _ in unet.named_modules()] == names
        assert torch.equal(unet(*inputs), plain)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_equals_diffusers_unet_motion_model(unet, unet2d, inputs, version):
    """Temporal norm over all frames, as diffusers computes it: the whole UNet output agrees."""
    motion = mm.random_motion_module(version)
    reference = mm.diffusers_motion_unet(unet, motion, unet2d)
    motion.set_norm_across_frames(True)
    with torch.no_grad():
        ours = run_with_slots(unet, motion.slots(), FRAMES, *inputs)
        plain = unet(*inputs)
    theirs = diffusers_output(reference, *inputs)
    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (plain - theirs).abs().max() > 100 * TOLERANCE  # the motion modules do change the output


def test_per_frame_temporal_norm_equals_diffusers_with_per_frame_norms(unet, unet2d, inputs):
    """AnimateDiff's own code normalises each frame in the temporal transformer (our default)."""
    motion = mm.random_motion_module("v2")
    reference = mm.diffusers_motion_unet(unet, motion, unet2d)
    across = diffusers_output(reference, *inputs)
    for transformer in reference.modules():
        if type(transformer).__name__ == "AnimateDiffTransformer3D":
            transformer.norm = PerFrame(transformer.norm)
    with torch.no_grad():
        ours = run_with_slots(unet, motion.slots(), FRAMES, *inputs)
    theirs = diffusers_output(reference, *inputs)
    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (across - theirs).abs().max() > 100 * TOLERANCE


def test_v1_unet_norms_across_frames_equal_diffusers_with_inflated_norms(unet, unet2d, inputs):
    """AnimateDiff v1's 3-D UNet: ResBlock and output GroupNorms with statistics over the frames."""
    motion = mm.random_motion_module("v1")
    reference = mm.diffusers_motion_unet(unet, motion, unet2d)
    for module in reference.modules():
        if type(module).__name__ == "ResnetBlock2D":
            module.norm1, module.norm2 = AcrossFrames(module.norm1, FRAMES), AcrossFrames(module.norm2, FRAMES)
    reference.conv_norm_out = AcrossFrames(reference.conv_norm_out, FRAMES)
    for transformer in reference.modules():
        if type(transformer).__name__ == "AnimateDiffTransformer3D":
            transformer.norm = PerFrame(transformer.norm)
    with torch.no_grad():
        ours = run_with_slots(unet, motion.slots(), FRAMES, *inputs,
                              norms_across_frames=motion.groupnorm_across_frames)
        per_frame = run_with_slots(unet, motion.slots(), FRAMES, *inputs)
    theirs = diffusers_output(reference, *inputs)
    assert (ours - theirs).abs().max() <= TOLERANCE
    assert (per_frame - theirs).abs().max() > 100 * TOLERANCE


def test_a_unet_of_other_widths_is_refused_before_anything_runs(inputs):
    wide = models.ldm_unet(model_channels=64)
    names = [name for name, _ in wide.named_modules()]
    with pytest.raises(ValueError, match=r"input block 1, layer 1 should give 32 channels, found SpatialTransformer "
                                         r"of 64 channels"):
        run_with_slots(wide, mm.random_motion_module("v1").slots(), FRAMES, *inputs)
    assert [name for name, _ in wide.named_modules()] == names


def test_norms_routed_across_frames_are_exactly_the_ldm_groupnorm32_set(unet):
    from ldm.modules.diffusionmodules.util import GroupNorm32

    group_norm32 = {id(m) for m in unet.modules() if isinstance(m, GroupNorm32)}
    with inserted_slots(unet, [], FRAMES, norms_across_frames=True):
        routed = {id(m.norm) for m in unet.modules() if isinstance(m, AcrossFrames)}
    assert routed == group_norm32 and len(routed) == 2 * 22 + 1  # 22 ResBlocks, the output norm


def test_chunks_stay_apart_and_frames_mix_only_through_the_motion_modules(unet, inputs):
    motion = mm.random_motion_module("v1")
    x, t, context = inputs

    def run(x, t, context):
        return run_with_slots(unet, motion.slots(), FRAMES, x, t, context, norms_across_frames=True)

    nudged = x.clone()
    nudged[3] += 1.0  # frame 3 of the first chunk
    with torch.no_grad():
        together = run(x, t, context)
        apart = torch.cat([run(x[rows], t[rows], context[rows]) for rows in (slice(0, FRAMES), slice(FRAMES, None))])
        motion_moved = run(nudged, t, context) - together
        plain_moved = unet(nudged, t, context) - unet(x, t, context)
    assert (together - apart).abs().max() <= TOLERANCE
    assert motion_moved[0].abs().max() > 1e-3  # frame 0 of the same chunk feels it
    assert motion_moved[FRAMES:].abs().max() == 0  # the other chunk does not
    assert plain_moved[0].abs().max() == 0  # without motion modules frames are independent


def test_attention_in_slices_equals_one_call(monkeypatch):
    module = mm.random_motion_module("v1").slots()[0].module
    x = torch.randn(2 * FRAMES, 32, 8, 8)
    with torch.no_grad():
        whole = module(x, FRAMES)
        monkeypatch.setattr(architecture, "_ATTENTION_ROW_LIMIT", 8 * 5)  # 5 rows per slice, 128 rows
        sliced = module(x, FRAMES)
    assert (whole - sliced).abs().max() <= 1e-5


def test_groupnorm_across_frames_equals_statistics_over_all_frames_of_a_chunk():
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 8, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2 * 3, 8, 5, 5)
    out = groupnorm_across_frames(norm, x, 3)
    grouped = x.view(2, 3, 4, 2, 5, 5)  # chunk, frame, group, channel in group, h, w
    mean = grouped.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = grouped.var(dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
    expected = ((grouped - mean) / torch.sqrt(var + 1e-5)).view(6, 8, 5, 5)
    expected = expected * norm.weight.view(1, 8, 1, 1) + norm.bias.view(1, 8, 1, 1)
    assert (out - expected).abs().max() <= 1e-5
    assert (norm(x) - expected).abs().max() > 1e-2  # per frame is different
    with pytest.raises(ValueError, match="do not split"):
        groupnorm_across_frames(norm, x, 4)
