"""Weight files: every accepted layout, the key maps, and every refusal."""
import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from i2v_adapter.weights.adapter import TENSOR_SUFFIXES, WeightsError, base_model_of_channels
from i2v_adapter.weights.naming import ldm_to_diffusers
from i2v_adapter.weights.files import (
    adapter_output_is_zero,
    adapter_tensor_name,
    describe_weights_file,
    extract_motion_module,
    load_adapter_weights,
    save_adapter_weights,
)

import weight_fixtures as wf


def official_ldm_pairs(official: dict):
    """(ldm name, suffix, tensor) for each official key."""
    for key, tensor in official.items():
        layer, _, suffix = key.partition(".attn1.")
        yield wf_ldm(layer + ".attn1"), suffix, tensor


def wf_ldm(diffusers_layer: str) -> str:
    block = diffusers_layer.removesuffix("." + wf.ATTN1)
    return f"{wf.SD15_LDM_BLOCKS[list(wf.SD15_DIFFUSERS_BLOCKS).index(block)]}.{wf.ATTN1}"


def assert_same_tensors(weights, official: dict):
    assert len(weights.layers) * 3 == len(official)
    for ldm_name, suffix, tensor in official_ldm_pairs(official):
        layer = weights.layers[ldm_name]
        stored = {"to_q_ff.weight": layer.q_weight, "to_out_ff.weight": layer.out_weight,
                  "to_out_ff.bias": layer.out_bias}[suffix]
        assert stored.dtype == tensor.dtype
        assert torch.equal(stored, tensor), (ldm_name, suffix)


@pytest.fixture(scope="module")
def sd15_fp32():
    return wf.official_state_dict(torch.float32, seed=1)


@pytest.fixture(scope="module")
def sd15_fp16():
    return wf.official_state_dict(torch.float16, seed=2)


@pytest.fixture
def tiny():
    return wf.official_state_dict(torch.float32, seed=3, blocks=wf.TINY_BLOCKS)


def save_pickle(tmp_path, state, name="weights.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


# ---------------------------------------------------------------- official layout, full SD1.5 geometry


def test_official_sd15_file_loads_all_48_tensors(tmp_path, sd15_fp32):
    assert len(sd15_fp32) == 48
    weights = load_adapter_weights(save_pickle(tmp_path, sd15_fp32, "i2v_module.pth"))

    assert weights.source_format == "official"
    assert weights.base == "sd15"
    assert len(weights.layers) == 16
    assert weights.parameter_count == wf.SD15_PARAMETERS == 24_793_280
    assert sorted(weights.layers) == sorted(wf.sd15_ldm_layer_names())
    assert weights.ignored_keys == []
    assert_same_tensors(weights, sd15_fp32)
    assert weights.layers["input_blocks.1.1.transformer_blocks.0.attn1"].channels == 320
    assert weights.layers["middle_block.1.transformer_blocks.0.attn1"].channels == 1280
    assert weights.layers["output_blocks.11.1.transformer_blocks.0.attn1"].channels == 320


def test_sd15_names_map_both_ways():
    for (diffusers_block, _), ldm_block in zip(wf.SD15_DIFFUSERS_BLOCKS.items(), wf.SD15_LDM_BLOCKS):
        for suffix in TENSOR_SUFFIXES:
            key = f"{diffusers_block}.{wf.ATTN1}.{suffix}"
            assert adapter_tensor_name(key) == (f"{ldm_block}.{wf.ATTN1}", suffix)
        assert ldm_to_diffusers(f"{ldm_block}.{wf.ATTN1}") == f"{diffusers_block}.{wf.ATTN1}"


@pytest.mark.parametrize("wrap", ["state_dict", "module.", "unet.", "state_dict+module.unet."])
def test_checkpoint_wrappers_and_prefixes_are_accepted(tmp_path, tiny, wrap):
    state = tiny
    if "module." in wrap or wrap == "unet.":
        prefix = wrap.removeprefix("state_dict+")
        state = {prefix + key: tensor for key, tensor in state.items()}
    if wrap.startswith("state_dict"):
        state = {"state_dict": state, "epoch": 7}
    weights = load_adapter_weights(save_pickle(tmp_path, state))

    assert weights.source_format == "official"
    assert_same_tensors(weights, tiny)
    assert weights.ignored_keys == (["epoch"] if wrap.startswith("state_dict") else [])


def test_legacy_torch_pickle_format_loads(tmp_path, tiny):
    path = tmp_path / "old.pth"
    torch.save(tiny, path, _use_new_zipfile_serialization=False)
    assert_same_tensors(load_adapter_weights(path), tiny)


def test_round_trip_official_to_own_safetensors(tmp_path, sd15_fp16):
    original = load_adapter_weights(save_pickle(tmp_path, sd15_fp16, "i2v_module.pth"))
    out = tmp_path / "adapter.safetensors"
    save_adapter_weights(original, out)

    with safe_open(str(out), framework="pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
    assert keys == {f"{name}.{suffix}" for name in wf.sd15_ldm_layer_names() for suffix in TENSOR_SUFFIXES}
    assert metadata == {"format": "i2v-adapter", "base": "sd15", "version": "1", "source_format": "official"}

    again = load_adapter_weights(out)
    assert again.source_format == "own"
    assert again.base == "sd15"
    assert again.metadata == metadata
    assert again.parameter_count == 24_793_280
    assert_same_tensors(again, sd15_fp16)
    assert not list(tmp_path.glob("*.partial"))


def test_save_refuses_other_extensions(tmp_path, tiny):
    weights = load_adapter_weights(save_pickle(tmp_path, tiny))
    with pytest.raises(WeightsError, match=r"\.safetensors"):
        save_adapter_weights(weights, tmp_path / "adapter.pth")
    assert not (tmp_path / "adapter.pth").exists()


# ---------------------------------------------------------------- unofficial and ipplus layouts


@pytest.mark.parametrize("container", ["safetensors", "pickle"])
def test_unofficial_layout_maps_to_the_same_tensors(tmp_path, tiny, container):
    state = wf.unofficial_state_dict(tiny)
    if container == "safetensors":
        path = tmp_path / "diffusion_pytorch_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = save_pickle(tmp_path, state)
    weights = load_adapter_weights(path)

    assert weights.source_format == "unofficial"
    assert_same_tensors(weights, tiny)
    frozen = sorted(key for key in state if ".to_k." in key or ".to_v." in key)
    assert len(frozen) == 32
    assert weights.ignored_keys == frozen


def test_ipplus_unet_with_adapter_gives_the_adapter(tmp_path, tiny):
    state = wf.ipplus_state_dict(adapter=tiny)
    weights = load_adapter_weights(save_pickle(tmp_path, state, "animatediff_v15_v1_ipplus.pth"))

    assert weights.source_format == "ipplus"
    assert_same_tensors(weights, tiny)
    assert weights.ignored_keys == sorted(set(state) - set(tiny))
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_ip.weight" in weights.ignored_keys
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight" in weights.ignored_keys


def test_ipplus_unet_without_adapter_is_refused(tmp_path):
    path = save_pickle(tmp_path, wf.ipplus_state_dict(with_adapter=False))
    with pytest.raises(WeightsError, match="whole UNet/motion module without I2V-Adapter weights") as caught:
        load_adapter_weights(path)
    assert "i2v_module.pth" in str(caught.value)


def test_motion_module_extraction_writes_exactly_the_motion_keys(tmp_path):
    state = wf.ipplus_state_dict(with_adapter=False)
    path = save_pickle(tmp_path, {"unet." + key: tensor for key, tensor in state.items()})
    out = tmp_path / "mm_i2v_v15.safetensors"

    count = extract_motion_module(path, out)

    motion = wf.motion_module_state_dict()
    assert count == len(motion) == 27
    with safe_open(str(out), framework="pt") as handle:
        assert set(handle.keys()) == set(motion)
        for key, tensor in motion.items():
            assert torch.equal(handle.get_tensor(key), tensor)


def test_motion_module_extraction_needs_motion_keys(tmp_path, tiny):
    out = tmp_path / "mm.safetensors"
    with pytest.raises(WeightsError, match="no motion module"):
        extract_motion_module(save_pickle(tmp_path, tiny), out)
    assert not out.exists()


# ---------------------------------------------------------------- refusals


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        load_adapter_weights(tmp_path / "absent.pth")


def test_folder_is_refused_with_a_hint(tmp_path):
    with pytest.raises(WeightsError, match="is a folder"):
        load_adapter_weights(tmp_path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "i2v_module.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(WeightsError, match="not a readable weights file") as caught:
        load_adapter_weights(path)
    assert str(path) in str(caught.value)


def test_truncated_safetensors_is_refused(tmp_path, tiny):
    whole = tmp_path / "whole.safetensors"
    save_adapter_weights(load_adapter_weights(save_pickle(tmp_path, tiny)), whole)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file") as caught:
        load_adapter_weights(cut)
    assert str(cut) in str(caught.value)


def test_truncated_pickle_is_refused(tmp_path, tiny):
    whole = save_pickle(tmp_path, tiny)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load_adapter_weights(cut)


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, tiny, writer):
    marker = tmp_path / "code_ran"
    state = dict(tiny, payload=RunsCode(marker))
    path = tmp_path / "i2v_module.pth"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=2)
    with pytest.raises(WeightsError, match="other than tensors; refusing to load it for safety"):
        load_adapter_weights(path)
    assert not marker.exists()


def test_wrong_shape_names_the_layer(tmp_path, sd15_fp16):
    state = dict(sd15_fp16)
    state["down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out_ff.weight"] = torch.zeros(640, 640)
    with pytest.raises(WeightsError, match="wrong tensor shapes") as caught:
        load_adapter_weights(save_pickle(tmp_path, state))
    message = str(caught.value)
    assert "input_blocks.2.1.transformer_blocks.0.attn1" in message
    assert "to_out_ff.weight 640x640" in message
    assert "input_blocks.1.1" not in message


def test_unknown_keys_are_named(tmp_path, tiny):
    strangers = [
        "first_stage_model.encoder.conv_in.weight",
        "vae.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_ff.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k_ff.weight",
        "lora_unet_down_blocks_0.alpha",
    ]
    state = dict(tiny, **{key: torch.zeros(1) for key in strangers})
    with pytest.raises(WeightsError, match="4 keys are neither I2V-Adapter tensors") as caught:
        load_adapter_weights(save_pickle(tmp_path, state))
    for key in strangers:
        assert key in str(caught.value)


def test_long_unknown_key_list_is_cut(tmp_path, tiny):
    state = dict(tiny, **{f"stranger_{i:02d}.weight": torch.zeros(1) for i in range(25)})
    with pytest.raises(WeightsError, match=r"25 keys .*stranger_09\.weight \(and 15 more\)") as caught:
        load_adapter_weights(save_pickle(tmp_path, state))
    assert "stranger_10" not in str(caught.value)


def test_layer_missing_its_bias_is_named(tmp_path, tiny):
    state = dict(tiny)
    del state["up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_out_ff.bias"]
    with pytest.raises(WeightsError, match="incomplete adapter layers") as caught:
        load_adapter_weights(save_pickle(tmp_path, state))
    assert "output_blocks.7.1.transformer_blocks.0.attn1 lacks to_out_ff.bias" in str(caught.value)


def test_same_tensor_under_two_names_is_refused(tmp_path, tiny):
    state = dict(tiny)
    state["input_blocks.1.1.transformer_blocks.0.attn1.to_q_ff.weight"] = torch.zeros(8, 8)
    with pytest.raises(WeightsError, match="appears twice") as caught:
        load_adapter_weights(save_pickle(tmp_path, state))
    assert "input_blocks.1.1.transformer_blocks.0.attn1.to_q_ff.weight" in str(caught.value)


@pytest.mark.parametrize("content", [{}, {"a": 3}, [torch.zeros(1)]])
def test_files_without_tensors_are_refused(tmp_path, content):
    with pytest.raises(WeightsError, match="no tensors|not tensors|not a dictionary"):
        load_adapter_weights(save_pickle(tmp_path, content))


# ---------------------------------------------------------------- SDXL geometry


def test_sdxl_names_map_to_the_70_ldm_layers():
    layers = wf.sdxl_layers()
    assert len(layers) == 70
    channels = {}
    for diffusers_name, ldm_name, width in layers:
        block = diffusers_name.removesuffix(".attn1")
        for suffix in TENSOR_SUFFIXES:
            assert adapter_tensor_name(f"{diffusers_name}.{suffix}") == (ldm_name, suffix)
            assert adapter_tensor_name(f"unet.{diffusers_name}.{suffix}") == (ldm_name, suffix)
            assert adapter_tensor_name(f"{ldm_name}.{suffix}") == (ldm_name, suffix)
        assert adapter_tensor_name(f"{block}.i2v_adapter.to_out.0.bias") == (ldm_name, "to_out_ff.bias")
        assert adapter_tensor_name(f"{block}.i2v_adapter.to_k.weight") is None
        channels[ldm_name] = width
    assert len(channels) == 70
    assert "output_blocks.2.1.transformer_blocks.9.attn1" in channels
    assert "middle_block.1.transformer_blocks.9.attn1" in channels
    assert base_model_of_channels(channels) == "sdxl"
    sd15 = {name: width for name, width in zip(wf.sd15_ldm_layer_names(), wf.SD15_DIFFUSERS_BLOCKS.values())}
    assert base_model_of_channels(sd15) == "sd15"


def test_temporal_and_foreign_keys_are_not_adapter_tensors():
    assert adapter_tensor_name("down_blocks.0.motion_modules.0.temporal_transformer.attn1.to_q_ff.weight") is None
    assert adapter_tensor_name("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q_ff.weight") is None
    assert adapter_tensor_name("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight") is None
    # Only the known wrapper prefixes are dropped.
    assert adapter_tensor_name("first_stage_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q_ff.weight") is None
    assert adapter_tensor_name("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q_ff.weight") == (
        "input_blocks.1.1.transformer_blocks.0.attn1", "to_q_ff.weight")


# ---------------------------------------------------------------- describe


def test_describe_official_file(tmp_path, sd15_fp16):
    info = describe_weights_file(save_pickle(tmp_path, sd15_fp16))
    assert info["format"] == "official"
    assert info["base"] == "sd15"
    assert info["layers"] == 16
    assert info["parameters"] == 24_793_280
    assert info["dtype"] == "float16"
    assert info["ignored_keys"] == 0
    assert info["motion_module"] is False
    assert info["adapter_output_is_zero"] is False


def test_describe_ipplus_without_adapter(tmp_path):
    info = describe_weights_file(save_pickle(tmp_path, wf.ipplus_state_dict(with_adapter=False)))
    assert info["format"] == "ipplus"
    assert info["layers"] == 0
    assert info["motion_module"] is True
    assert info["motion_module_tensors"] == 27
    assert info["motion_module_version"] == "AnimateDiff v1 layout (24 frames)"
    assert info["ignored_families"]["ip_adapter"] == 3


def test_describe_notices_an_untrained_adapter(tmp_path, tiny):
    state = {key: torch.zeros_like(t) if "to_out_ff" in key else t for key, t in tiny.items()}
    path = save_pickle(tmp_path, state)
    assert describe_weights_file(path)["adapter_output_is_zero"] is True
    assert adapter_output_is_zero(load_adapter_weights(path)) is True
    state["mid_block.attentions.0.transformer_blocks.0.attn1.to_out_ff.bias"][3] = 1e-3
    assert describe_weights_file(save_pickle(tmp_path, state))["adapter_output_is_zero"] is False


def test_zip_pickles_are_mapped_and_legacy_pickles_still_read(tmp_path, monkeypatch):
    from i2v_adapter.weights.reading import read_file

    tensors = {"a": torch.randn(4, 4)}
    torch.save(tensors, tmp_path / "zip.pth")
    torch.save(tensors, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    calls = []
    real_load = torch.serialization.load

    def spying_load(*args, **kwargs):
        calls.append(kwargs.get("mmap"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.serialization, "load", spying_load)
    for name in ("zip.pth", "legacy.pth"):
        assert torch.equal(read_file(tmp_path / name).tensors["a"], tensors["a"])
    assert calls == [True, False]  # a legacy pickle cannot be mapped
