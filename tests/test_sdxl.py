"""SDXL's 70 spatial self-attention layers: names, hooks, adapter files and the SD1.5/SDXL refusal.

The hooks are checked on two SDXL-structured UNets with tiny widths: diffusers' UNet2DConditionModel
(transformer depth 2 and 10, text_time conditioning) and, where a WebUI checkout is named by I2V_WEBUI_DIR,
the sgm UNetModel A1111 runs SDXL with (``repositories/generative-models``). The refusal is checked
against the real SDXL and SD1.5 geometries, built on the meta device.
"""
import contextlib
import functools
import importlib
import io
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from i2v_adapter.hooks import FirstFrameHooks, find_attn1_layers, installed_hook_count, layer_channels
from i2v_adapter.layout import FrameLayout
from i2v_adapter.weights.adapter import AdapterWeights, LayerWeights, WeightsError
from i2v_adapter.weights.files import load_adapter_weights, save_adapter_weights

import models
import weight_fixtures as wf
from test_branch import naive_branch, naive_training_free

SDXL_LDM_NAMES = {ldm for _, ldm, _ in wf.sdxl_layers()}
FRAMES = 4


@functools.cache  # hooks are removed after every test: the model can be shared
def tiny_diffusers_sdxl(seed: int = 0):
    """SDXL's block structure (no attention at the first level, depth 2 then 10, text_time) with tiny widths."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(2, 4, 8), cross_attention_dim=models.CONTEXT_DIM,
        use_linear_projection=True, norm_num_groups=8, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=models.CONTEXT_DIM + 6 * 8,
    )
    return models.fill_zero_initialised(unet, seed).eval()


def _generative_models_root() -> Path:
    webui = os.environ.get("I2V_WEBUI_DIR")
    root = Path(webui or ".") / "repositories" / "generative-models" / "sgm"
    if not webui or not root.is_dir():
        pytest.skip("the sgm UNet needs I2V_WEBUI_DIR with repositories/generative-models")
    return root


def sgm_openaimodel():
    """sgm's UNet module without sgm's package imports (those pull training libraries the WebUI brings)."""
    root = _generative_models_root()
    for package, folder in (("sgm", root), ("sgm.modules", root / "modules"),
                            ("sgm.modules.diffusionmodules", root / "modules" / "diffusionmodules")):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(folder)]
            sys.modules[package] = module
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("sgm.modules.diffusionmodules.openaimodel")
    except ImportError as error:
        pytest.skip(f"sgm does not import here: {error}")


@functools.cache
def tiny_sgm_sdxl(seed: int = 0):
    """The sgm UNetModel with sd_xl_base's settings but tiny widths."""
    openaimodel = sgm_openaimodel()
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        unet = openaimodel.UNetModel(
            adm_in_channels=48, num_classes="sequential", use_checkpoint=False, in_channels=4, out_channels=4,
            model_channels=32, attention_resolutions=[4, 2], num_res_blocks=2, channel_mult=[1, 2, 4],
            num_head_channels=8, use_spatial_transformer=True, use_linear_in_transformer=True,
            transformer_depth=[1, 2, 10], context_dim=models.CONTEXT_DIM,
            spatial_transformer_attn_type="softmax-xformers", legacy=False)
    return models.fill_zero_initialised(unet, seed).eval()


def run_diffusers(unet, rows: int, seed: int = 5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, 8, 8, generator=generator)
    context = torch.randn(rows, 7, models.CONTEXT_DIM, generator=generator)
    added = {"text_embeds": torch.randn(rows, models.CONTEXT_DIM, generator=generator),
             "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]]).repeat(rows, 1)}
    return unet(x, 500, context, added_cond_kwargs=added).sample


def run_sgm(unet, rows: int, seed: int = 5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, 8, 8, generator=generator)
    context = torch.randn(rows, 7, models.CONTEXT_DIM, generator=generator)
    vector = torch.randn(rows, 48, generator=generator)
    return unet(x, torch.full((rows,), 500.0), context=context, y=vector)


UNETS = {"diffusers": (tiny_diffusers_sdxl, run_diffusers), "sgm": (tiny_sgm_sdxl, run_sgm)}


@pytest.mark.parametrize("kind", UNETS)
def test_sdxl_unets_have_the_70_layers_by_ldm_name(kind):
    build, _ = UNETS[kind]
    layers = find_attn1_layers(build())
    assert set(layers) == SDXL_LDM_NAMES
    assert len(layers) == 70


@pytest.mark.parametrize("kind", UNETS)
@pytest.mark.parametrize("trained", [True, False])
def test_every_sdxl_layer_gets_the_branch_and_removal_is_bit_identical(kind, trained):
    build, run = UNETS[kind]
    unet = build()
    weights = models.random_adapter(unet) if trained else None
    layout = FrameLayout(FRAMES)
    with torch.no_grad():
        plain = run(unet, 2 * FRAMES)
        with FirstFrameHooks(unet, layout, weights, scale=0.8):
            hooked = run(unet, 2 * FRAMES)
        assert installed_hook_count(unet) == 0
        again = run(unet, 2 * FRAMES)
    assert layout.stats["anchored"] == 70  # one call per layer, every one with frame 0
    assert layout.stats["untouched"] == layout.stats["unreferenced"] == 0
    assert (hooked - plain).abs().max() > 1e-3
    assert torch.equal(plain, again)


def _deep_sgm_attention():
    unet = tiny_sgm_sdxl()
    return unet, find_attn1_layers(unet)["middle_block.1.transformer_blocks.9.attn1"]


def test_branch_on_sgm_attention_equals_naive_reference():
    unet, attention = _deep_sgm_attention()
    weights = models.random_adapter(unet).layers["middle_block.1.transformer_blocks.9.attn1"]
    x = torch.randn(2 * FRAMES, 4, attention.to_q.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = naive_branch(attention, x, weights, FRAMES, 0, scale=0.7)
        with FirstFrameHooks(unet, FrameLayout(FRAMES), models.random_adapter(unet), scale=0.7):
            # As sgm's BasicTransformerBlock calls attn1.
            got = attention(x, context=None, additional_tokens=None, n_times_crossframe_attn_in_self=0)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_training_free_on_sgm_attention_equals_frame_zero_as_context():
    unet, attention = _deep_sgm_attention()
    x = torch.randn(2 * FRAMES, 4, attention.to_q.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = naive_training_free(attention, x, FRAMES, 0, scale=0.6)
        with FirstFrameHooks(unet, FrameLayout(FRAMES), None, scale=0.6):
            got = attention(x, context=None, additional_tokens=None, n_times_crossframe_attn_in_self=0)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_sdxl_adapter_file_round_trips_and_fits(tmp_path):
    unet = tiny_diffusers_sdxl()
    weights = models.random_adapter(unet, seed=4)
    path = tmp_path / "sdxl_adapter.safetensors"
    save_adapter_weights(weights, path)
    loaded = load_adapter_weights(path)
    assert set(loaded.layers) == SDXL_LDM_NAMES
    FirstFrameHooks(unet, FrameLayout(FRAMES), loaded)  # fits: no error
    with torch.no_grad():
        with FirstFrameHooks(unet, FrameLayout(FRAMES), weights):
            from_memory = run_diffusers(unet, FRAMES)
        with FirstFrameHooks(unet, FrameLayout(FRAMES), loaded):
            from_file = run_diffusers(unet, FRAMES)
    assert torch.equal(from_memory, from_file)


# -- the real geometries, on the meta device --------------------------------------------------

SDXL_UNET_CONFIG = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816)


def meta_unet(config: dict):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def meta_adapter(unet) -> AdapterWeights:
    """An adapter of the real shapes for every attn1 of ``unet``, without memory (meta tensors)."""
    layers = {name: LayerWeights(*(torch.empty(shape, device="meta") for shape in ((c, c), (c, c), (c,))))
              for name, c in layer_channels(find_attn1_layers(unet)).items()}
    return AdapterWeights(layers, source_format="test")


@pytest.fixture(scope="module")
def real_unets():
    from i2v_adapter.pipeline.single_file import SD15_UNET_CONFIG

    return {"sd15": meta_unet(SD15_UNET_CONFIG), "sdxl": meta_unet(SDXL_UNET_CONFIG)}


def test_real_sdxl_adapter_fits_real_sdxl(real_unets):
    adapter = meta_adapter(real_unets["sdxl"])
    assert adapter.base == "sdxl"
    assert set(adapter.layers) == SDXL_LDM_NAMES
    FirstFrameHooks(real_unets["sdxl"], FrameLayout(FRAMES), adapter)


@pytest.mark.parametrize("adapter_base,model_base", [("sd15", "sdxl"), ("sdxl", "sd15")])
def test_adapter_for_the_other_base_is_refused_naming_both(real_unets, adapter_base, model_base):
    adapter = meta_adapter(real_unets[adapter_base])
    with pytest.raises(WeightsError) as refused:
        FirstFrameHooks(real_unets[model_base], FrameLayout(FRAMES), adapter)
    message = str(refused.value)
    labels = {"sd15": "SD1.5", "sdxl": "SDXL"}
    assert message.startswith(f"This adapter was made for {labels[adapter_base]}")
    assert f"the loaded model is {labels[model_base]}" in message
    assert message.count(".") == 2 or message.endswith(".")  # one sentence, no list of 70 layer names
    assert "missing layers" not in message
