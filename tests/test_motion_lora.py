"""Motion LoRAs: both file layouts read, the merge is W + s * up @ down for every targeted projection,
undoing restores the module bit for bit, and files that do not fit are refused by name."""
import pytest
import torch
from motion_models import TINY_CHANNELS, random_motion_module
from safetensors.torch import save_file

from i2v_adapter.motion import MotionModule
from i2v_adapter.motion.lora import MotionLoraError, check_fits, load_motion_lora, merge_motion_loras

RANK = 4
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")


def _layer_paths(mid_block=True):
    """The temporal attention layers of a v2 module, written from AnimateDiff's released key layout."""
    levels = [(f"down_blocks.{i}", 2) for i in range(4)] + [(f"up_blocks.{i}", 3) for i in range(4)]
    if mid_block:
        levels.append(("mid_block", 1))
    return [f"{level}.motion_modules.{m}.temporal_transformer.transformer_blocks.0.attention_blocks.{a}"
            for level, count in levels for m in range(count) for a in (0, 1)]


def _width(path):
    level = path.split(".motion_modules")[0]
    index = 3 if level == "mid_block" else int(level.split(".")[1])
    widths = TINY_CHANNELS if level.startswith("down") or level == "mid_block" else tuple(reversed(TINY_CHANNELS))
    return widths[index]


def released_lora(seed=0, mid_block=True, width_of=_width):
    """``{path}.processor.to_q_lora.down.weight`` / ``.up.weight``, as the released v2_lora_*.ckpt."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for path in _layer_paths(mid_block):
        width = width_of(path)
        for proj in PROJECTIONS:
            tensors[f"{path}.processor.{proj}_lora.down.weight"] = torch.randn(RANK, width, generator=generator) * 0.1
            tensors[f"{path}.processor.{proj}_lora.up.weight"] = torch.randn(width, RANK, generator=generator) * 0.1
    return tensors


def resaved_lora(released):
    """The same pairs under the WebUI LoRA loader's underscored layer names (lora_down / lora_up)."""
    out = {}
    for key, tensor in released.items():
        path, rest = key.split(".processor.")
        proj, part = rest.replace("_lora.", ".").split(".")[:2]
        layer = (path + "." + ("to_out.0" if proj == "to_out" else proj)).replace(".", "_")
        out[f"{layer}.lora_{part}.weight"] = tensor
    return out


def _save(tmp_path, name, tensors):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)
    return path


@pytest.mark.parametrize("layout", ["released", "resaved"])
def test_merge_is_w_plus_s_up_down_for_every_projection_and_undo_is_exact(tmp_path, layout):
    module = random_motion_module("v2")
    before = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    released = released_lora()
    tensors = released if layout == "released" else resaved_lora(released)
    lora = load_motion_lora(_save(tmp_path, "v2_lora_ZoomIn.ckpt" if layout == "released" else "zoom.safetensors",
                                  tensors))
    assert len(lora.pairs) == len(released) // 2 == 21 * 2 * 4
    check_fits(lora, module, "mm_sd15_v2.ckpt")
    undo = merge_motion_loras(module, [(lora, 0.8)])
    after = module.state_dict()
    for key, tensor in released.items():
        if key.endswith(".down.weight"):
            path, rest = key.split(".processor.")
            proj = rest.split("_lora")[0]
            target = f"{path}.{'to_out.0' if proj == 'to_out' else proj}.weight"
            up = released[key.replace(".down.", ".up.")]
            expected = before[target] + 0.8 * up @ tensor
            assert torch.allclose(after[target], expected, atol=1e-6)
    untouched = [k for k in before if not any(p in k for p in (".to_q.", ".to_k.", ".to_v.", ".to_out.0."))]
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)
    undo()
    assert all(torch.equal(module.state_dict()[k], before[k]) for k in before)


def test_two_loras_add_up_and_undo_restores_bit_exactly():
    from i2v_adapter.motion.lora import motion_lora_from_tensors

    module = random_motion_module("v2")
    before = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    zoom = motion_lora_from_tensors(released_lora(1), "zoom.ckpt")
    pan = motion_lora_from_tensors(released_lora(2), "pan.ckpt")
    undo = merge_motion_loras(module, [(zoom, 1.0), (pan, -0.5)])
    target = next(iter(zoom.pairs))
    expected = before[target] + zoom.pairs[target].delta() - 0.5 * pan.pairs[target].delta()
    assert torch.allclose(module.state_dict()[target], expected, atol=1e-6)
    undo()
    assert all(torch.equal(module.state_dict()[k], before[k]) for k in before)


def test_a_stored_alpha_scales_by_alpha_over_rank():
    from i2v_adapter.motion.lora import motion_lora_from_tensors

    tensors = resaved_lora(released_lora())
    first = next(key for key in tensors if key.endswith(".lora_down.weight"))
    tensors[first.replace(".lora_down.weight", ".alpha")] = torch.tensor(2.0)
    lora = motion_lora_from_tensors(tensors, "scaled.safetensors")
    assert sorted({pair.scale for pair in lora.pairs.values()}) == [2.0 / RANK, 1.0]


def test_a_lora_for_another_module_is_refused_naming_both_files():
    from i2v_adapter.motion.lora import motion_lora_from_tensors

    v3 = random_motion_module("v3")  # no mid block
    lora = motion_lora_from_tensors(released_lora(), "v2_lora_PanLeft.ckpt")
    with pytest.raises(MotionLoraError, match=r"v2_lora_PanLeft.ckpt is a motion LoRA for another motion module "
                                              r"than v3_sd15_mm.ckpt \(it changes 8 projections in mid_block, "
                                              r"which that module does not have\)"):
        check_fits(lora, v3, "v3_sd15_mm.ckpt")
    wide = motion_lora_from_tensors(released_lora(width_of=lambda path: 2 * _width(path)), "sdxl_lora.ckpt")
    with pytest.raises(MotionLoraError, match="projections have other sizes, e.g. .* is 64x64 in the LoRA and 32x32"):
        check_fits(wide, random_motion_module("v2"), "mm_sd15_v2.ckpt")


def test_spatial_loras_and_motion_modules_are_refused_with_what_they_are():
    from i2v_adapter.motion.lora import motion_lora_from_tensors

    spatial = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}
    with pytest.raises(MotionLoraError, match=r"detail.safetensors is a LoRA for the picture model.*<lora:detail:1>"):
        motion_lora_from_tensors(spatial, "detail.safetensors")
    module = MotionModule(TINY_CHANNELS, max_frames=32, mid_block=True)
    with pytest.raises(MotionLoraError, match="mm.ckpt is a motion module, not a motion LoRA"):
        motion_lora_from_tensors(dict(module.state_dict()), "mm.ckpt")
    broken = released_lora()
    del broken[next(key for key in broken if key.endswith(".up.weight"))]
    with pytest.raises(MotionLoraError, match="lacks the up or down half"):
        motion_lora_from_tensors(broken, "broken.ckpt")
