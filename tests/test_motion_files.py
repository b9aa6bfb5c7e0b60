"""Motion-module files: every accepted format detected from its keys, everything else refused in a sentence."""
import pytest
import torch
from safetensors.torch import save_file

import motion_models as mm
from i2v_adapter.motion import MotionModule, MotionModuleError, load_motion_module, motion_module_from_tensors
from i2v_adapter.motion.diffusers_layout import convert_motion_module

SD15_V1_TENSORS = 20 * 28  # 20 temporal modules of 28 tensors each


def save(tensors: dict, path, pickle_it: bool = False):
    if pickle_it:
        torch.save(tensors, path)
    else:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def assert_same_weights(module: MotionModule, tensors: dict):
    state = module.state_dict()
    assert set(state) == set(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(state[key], tensor.float()), key


def refusal(path) -> str:
    with pytest.raises(MotionModuleError) as caught:
        load_motion_module(path)
    message = str(caught.value)
    assert "\n" not in message and str(path.name) in message
    return message


@pytest.mark.parametrize("version,max_frames,mid,slots", [("v1", 24, False, 20), ("v2", 32, True, 21),
                                                          ("v3", 32, False, 20)])
@pytest.mark.parametrize("pickle_it", [False, True])
def test_original_layouts_are_told_from_their_keys(tmp_path, version, max_frames, mid, slots, pickle_it):
    tensors = mm.original_state_dict(version)
    # the file name says v1 whatever the content: it must not matter
    module = load_motion_module(save(tensors, tmp_path / "mm_sd_v15.ckpt", pickle_it))
    assert (module.version, module.source, module.max_frames) == (version, "original", max_frames)
    assert (module.mid_block is not None) == mid
    assert module.groupnorm_across_frames == (version == "v1")
    assert len(module.slots()) == slots and module.channels == mm.TINY_CHANNELS
    assert_same_weights(module, tensors)
    assert module.notes == []


def test_v1_has_the_published_tensor_count_and_formula_parameter_count():
    module = MotionModule(mm.TINY_CHANNELS)
    assert len(module.state_dict()) == SD15_V1_TENSORS
    # 22 C^2 + 21 C per temporal module: 2 down and 3 up per level
    expected = sum((2 + 3) * (22 * c * c + 21 * c) for c in mm.TINY_CHANNELS)
    assert sum(p.numel() for p in module.parameters()) == expected


def test_wrapped_prefixed_half_precision_pickle_loads(tmp_path):
    tensors = mm.original_state_dict("v2")
    wrapped = {"state_dict": {f"module.{k}": v.half() for k, v in tensors.items()}, "epoch": 3}
    module = load_motion_module(save(wrapped, tmp_path / "trained.pth", pickle_it=True))
    assert module.version == "v2"
    assert torch.allclose(module.state_dict()["mid_block.motion_modules.0.temporal_transformer.proj_in.weight"],
                          tensors["mid_block.motion_modules.0.temporal_transformer.proj_in.weight"], atol=1e-3)


def test_diffusers_motion_adapter_file_loads_with_the_same_weights(tmp_path):
    reference = mm.random_motion_module("v2")
    mm.diffusers_motion_adapter(reference).save_pretrained(tmp_path / "adapter")
    module = load_motion_module(tmp_path / "adapter" / "diffusion_pytorch_model.safetensors")
    assert (module.version, module.source, module.max_frames) == ("v2", "diffusers", 32)
    assert_same_weights(module, reference.state_dict())


@pytest.mark.parametrize("motion_naming", ["original", "diffusers"])
def test_motion_part_of_the_ipplus_whole_unet_is_used_and_the_rest_reported(tmp_path, motion_naming):
    whole = mm.ipplus_state_dict()
    motion = {k: v for k, v in whole.items() if ".motion_modules." in k}
    if motion_naming == "diffusers":
        whole = {k: v for k, v in whole.items() if k not in motion}
        whole.update(convert_motion_module(motion))
    module = load_motion_module(save(whole, tmp_path / "animatediff_v15_v1_ipplus.pth", pickle_it=True))
    assert (module.version, module.source, module.max_frames) == ("v1", "ipplus", 24)
    assert module.groupnorm_across_frames
    assert_same_weights(module, motion)
    used = sum(".motion_modules." in k for k in whole)  # diffusers keeps one position table per block
    spatial = sum(1 for k in whole if ".motion_modules." not in k and "_ip." not in k and "_ff." not in k)
    assert module.notes == [
        f"whole-UNet file: used its {used} motion-module tensors; not used here: {spatial} spatial UNet, "
        "32 IP-Adapter K/V, 48 I2V-Adapter tensors (the WebUI's own checkpoint, IP-Adapter and adapter files serve "
        "those)"]


def test_animatelcm_gets_its_sinusoidal_positions_and_equals_v2_with_the_same_tables(tmp_path):
    import math

    from i2v_adapter.motion import load_motion_module

    v2 = mm.original_state_dict("v2")
    released = {k: v for k, v in v2.items() if not k.endswith(".pos_encoder.pe")}  # AnimateLCM's file: no tables
    module = load_motion_module(save(released, tmp_path / "AnimateLCM_sd15_t2v.safetensors"))
    assert module.version == "AnimateLCM" and module.max_frames == 64 and module.mid_block is not None
    assert not module.groupnorm_across_frames and module.describe().startswith("AnimateLCM (original), 21 modules")
    table = dict(module.named_buffers())[
        "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"]
    channels = table.shape[-1]
    # Written from the Transformer sinusoid AnimateLCM adds: sin on even channels, cos on odd, base 10,000.
    for position, channel in ((0, 0), (0, 1), (5, 2), (63, channels - 1), (17, channels - 2)):
        rate = math.exp(-(channel - channel % 2) * math.log(10000.0) / channels)
        expected = math.sin(position * rate) if channel % 2 == 0 else math.cos(position * rate)
        assert abs(float(table[0, position, channel]) - expected) < 1e-5
    # With the same weights and the tables v2's file stores (the same sinusoids, 32 long), the same module output.
    reference = load_motion_module(save(v2, tmp_path / "v2.safetensors"))
    x = torch.randn(8, module.channels[1], 4, 4)
    slot = module.down_blocks[1].motion_modules[0]
    assert torch.allclose(slot(x, 8), reference.down_blocks[1].motion_modules[0](x, 8), atol=1e-5)


def test_foreign_files_are_refused(tmp_path):
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in mm.tiny_ldm_unet().state_dict().items()}
    assert "holds no motion module" in refusal(save(checkpoint, tmp_path / "sd15.safetensors"))

    lora = {"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
            ".processor.to_q_lora.down.weight": torch.zeros(4, 32)}
    assert "is a LoRA" in refusal(save(lora, tmp_path / "motion_lora.safetensors"))

    no_tables = {k: v for k, v in mm.original_state_dict("v3").items() if not k.endswith(".pe")}
    assert "no position tables (pos_encoder.pe) and no mid block" in refusal(save(no_tables, tmp_path / "x.safetensors"))

    extra = {**mm.original_state_dict("v3"), "controlnet_cond_embedding.conv_in.weight": torch.zeros(1)}
    assert "neither to a motion module nor to a UNet: controlnet_cond_embedding" in refusal(
        save(extra, tmp_path / "sparsectrl.safetensors"))


def test_incomplete_or_misshapen_modules_name_the_tensors(tmp_path):
    tensors = mm.original_state_dict("v1")
    missing_key = "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.bias"
    del tensors[missing_key]
    assert f"lacks {missing_key}" in refusal(save(tensors, tmp_path / "missing.safetensors"))

    tensors = mm.original_state_dict("v1")
    bent = "down_blocks.1.motion_modules.0.temporal_transformer.proj_in.weight"
    tensors[bent] = torch.zeros(64, 63)
    assert f"wrong shape {bent} (64, 63) instead of (64, 64)" in refusal(save(tensors, tmp_path / "bent.safetensors"))

    tensors = mm.original_state_dict("v1")
    narrow = {k: v for k, v in tensors.items() if not k.startswith("up_blocks.3.motion_modules.2.")}
    assert "does not have a motion-module layout (modules per down level {0: 2, 1: 2, 2: 2, 3: 2}, per up level " \
           "{0: 3, 1: 3, 2: 3, 3: 2}" in refusal(save(narrow, tmp_path / "narrow.safetensors"))


def test_damaged_files_are_refused(tmp_path):
    good = save(mm.original_state_dict("v1"), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable safetensors file" in refusal(truncated)

    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(bytes(range(256)) * 40)
    assert "not a readable weights file" in refusal(noise)

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert "is empty" in refusal(empty)


class NotATensor:
    """Unpickling this would run code from the file: the weights-only unpickler must refuse it."""


def test_pickles_with_python_objects_are_refused(tmp_path):
    path = tmp_path / "object.ckpt"
    torch.save({"x": torch.zeros(1), "payload": NotATensor()}, path)
    assert "other than tensors" in refusal(path)


def test_tensors_already_read_are_judged_the_same_way():
    module = motion_module_from_tensors(mm.original_state_dict("v3"), "v3_sd15_mm.ckpt")
    assert (module.version, module.max_frames) == ("v3", 32)
    assert motion_module_from_tensors(mm.hotshot_state_dict(), "hsxl_temporal_layers.safetensors").version == "HotShot-XL"
    lora = {"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.lora_down.weight": torch.zeros(4, 32)}
    with pytest.raises(MotionModuleError, match=r"^v2_lora_ZoomIn.ckpt is a LoRA"):
        motion_module_from_tensors(lora, "v2_lora_ZoomIn.ckpt")
