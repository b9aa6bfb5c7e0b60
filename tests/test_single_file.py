"""Single-file SD1.5 checkpoints (ldm keys, as the WebUIs keep them): exact conversion, tokenizer from the hub cache.

The file is a tiny random SD1.5-layout model written from the ldm classes A1111 runs (UNet, VAE encoder and
decoder) and transformers' CLIP text model, under the real key prefixes.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from i2v_adapter.cli import main
from i2v_adapter.pipeline.hub_files import CLIP_TOKENIZER
from i2v_adapter.pipeline.single_file import load_single_file

import hub_cache
import models
from test_pipeline import FRAMES, SIZE, STEPS, TINY_MOTION, to_original_layout, write_tokenizer

ROOT = Path(__file__).resolve().parents[1]
UNET_WIDTH, TEXT_WIDTH = 32, 32   # ldm's GroupNorm has 32 groups: 32 channels is the least
VAE_ARGS = dict(ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[], in_channels=3,
                resolution=SIZE, z_channels=4)


def ldm_parts(tokenizer):
    """The ldm UNet (SD1.5 layout and 8 heads), ldm VAE halves with their 1x1 convs, and a CLIP text model."""
    from ldm.modules.diffusionmodules.model import Decoder, Encoder
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNetModel(image_size=8, in_channels=4, out_channels=4, model_channels=UNET_WIDTH,
                     attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8,
                     use_spatial_transformer=True, transformer_depth=1, context_dim=TEXT_WIDTH, legacy=False)
    vae = {"encoder": Encoder(double_z=True, **VAE_ARGS), "decoder": Decoder(**VAE_ARGS),
           "quant_conv": torch.nn.Conv2d(8, 8, 1), "post_quant_conv": torch.nn.Conv2d(4, 4, 1)}
    # One head of 32: CLIP's heads are 64 wide, and the loader infers the count from the width.
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=1, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0,
        eos_token_id=1, pad_token_id=1))
    return models.fill_zero_initialised(unet, 0).eval(), {k: v.eval() for k, v in vae.items()}, text.eval()


def single_file_state(unet, vae, text) -> dict:
    state = {f"model.diffusion_model.{key}": value for key, value in unet.state_dict().items()}
    for part, module in vae.items():
        state.update({f"first_stage_model.{part}.{key}": value for key, value in module.state_dict().items()})
    state.update({f"cond_stage_model.transformer.{key}": value for key, value in text.state_dict().items()})
    return {key: value.contiguous() for key, value in state.items()}


def motion_module_for(widths) -> dict:
    from diffusers import MotionAdapter

    torch.manual_seed(4)
    adapter = MotionAdapter(block_out_channels=widths, motion_layers_per_block=2, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=24, use_motion_mid_block=False)
    return to_original_layout(models.fill_zero_initialised(adapter, 4).state_dict())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    tokenizer = write_tokenizer(root / "tokenizer")
    unet, vae, text = ldm_parts(tokenizer)
    checkpoint = root / "tiny-sd15.safetensors"
    save_file(single_file_state(unet, vae, text), str(checkpoint))
    motion = root / "mm_tiny.safetensors"
    save_file(motion_module_for((UNET_WIDTH, 2 * UNET_WIDTH, 4 * UNET_WIDTH, 4 * UNET_WIDTH)), str(motion))
    image = root / "cat.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(image)
    cache = root / "hub-cache"
    hub_cache.add_to_cache(cache, CLIP_TOKENIZER.repo_id, {
        name: hub_cache.tokenizer_file(root / "tokenizer", name) for name in CLIP_TOKENIZER.filenames})
    return {"root": root, "checkpoint": checkpoint, "motion": motion, "image": image, "cache": cache,
            "ldm": (unet, vae, text), "tokenizer": root / "tokenizer"}


def test_single_file_parts_compute_what_the_ldm_parts_compute(single):
    unet, vae, text = single["ldm"]
    unet2d, autoencoder, text_encoder, tokenizer = load_single_file(str(single["checkpoint"]),
                                                                    str(single["tokenizer"]))
    generator = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 7, TEXT_WIDTH, generator=generator)
    image, latent = torch.randn(1, 3, SIZE, SIZE, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    ids = torch.tensor([tokenizer("a cat", padding="max_length").input_ids])
    with torch.no_grad():
        timesteps = torch.tensor([500, 500])
        assert torch.allclose(unet2d(x, timesteps, encoder_hidden_states=context).sample,
                              unet(x, timesteps, context=context), atol=1e-5)
        moments = vae["quant_conv"](vae["encoder"](image))
        assert torch.allclose(autoencoder.encode(image).latent_dist.mean, moments[:, :4], atol=1e-5)
        assert torch.allclose(autoencoder.decode(latent).sample, vae["decoder"](vae["post_quant_conv"](latent)),
                              atol=1e-5)
        assert torch.equal(text_encoder(ids).last_hidden_state, text(ids).last_hidden_state)


def test_a_foreign_file_names_the_missing_part(single, tmp_path):
    from i2v_adapter.weights.adapter import WeightsError

    foreign = tmp_path / "not-sd.safetensors"
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(1)}, str(foreign))
    with pytest.raises(WeightsError, match="not an SD1.5 single-file checkpoint: its UNet has no "
                                           "model.diffusion_model.input_blocks.1.0.out_layers.3.bias"):
        load_single_file(str(foreign), str(single["tokenizer"]))


def generate_args(single, out, *extra):
    return [sys.executable, "-m", "i2v_adapter", "generate", "--image", single["image"], "--prompt", "a cat",
            "--checkpoint", single["checkpoint"], "--motion-module", single["motion"], "--training-free",
            "--frames", FRAMES, "--steps", STEPS, "--width", SIZE, "--height", SIZE, "--out", out,
            "--motion-heads", TINY_MOTION["motion_heads"], "--motion-norm-groups", TINY_MOTION["motion_norm_groups"],
            *extra]


def test_single_file_without_tokenizer_flag_takes_the_cached_clip_tokenizer(single, monkeypatch):
    import imageio_ffmpeg

    hub_cache.go_offline(monkeypatch, single["cache"])
    out = single["root"] / "cat.mp4"
    result = subprocess.run([str(arg) for arg in generate_args(single, out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=os.environ.copy())

    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: {FRAMES} frames, {SIZE}x{SIZE}" in result.stdout and "training-free" in result.stdout
    reader = imageio_ffmpeg.read_frames(str(out))
    assert next(reader)["size"] == (SIZE, SIZE)
    assert sum(1 for _ in reader) == FRAMES


def test_single_file_offline_without_a_cached_tokenizer_is_one_sentence(single, tmp_path, monkeypatch, capsys):
    hub_cache.go_offline(monkeypatch, tmp_path / "empty")

    status = main([str(arg) for arg in generate_args(single, tmp_path / "x.gif", "--no-progress")[3:]])

    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert ("lacks the CLIP tokenizer (openai/clip-vit-large-patch14: vocab.json, merges.txt, "
            "tokenizer_config.json, special_tokens_map.json): ") in err
    assert err.rstrip().endswith("give local files with --tokenizer")
