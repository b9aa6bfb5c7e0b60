"""SDXL on tiny random models of its layout: training with both text encoders and size ids, validation videos
from the held-out image, and ``generate`` from an SDXL diffusers folder."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2v_adapter.cli import main
from i2v_adapter.weights.files import load_adapter_weights, save_adapter_weights

from test_pipeline import TINY_MOTION, TINY_MOTION_ARGS, write_tiny_diffusers_folder
from test_train import TRAIN_FRAMES, TRAIN_SIZE, one_thread, tiny_settings, train_files, trained  # noqa: F401


@pytest.fixture(scope="module")
def sdxl_folder(train_files):  # noqa: F811
    return write_tiny_sdxl_folder(train_files["root"] / "tiny-sdxl")


def write_tiny_sdxl_folder(folder: Path) -> Path:
    """SDXL's layout at tiny widths: text_time embedding, two text encoders side by side, deeper transformers."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    import models
    from test_pipeline import write_tokenizer

    write_tiny_diffusers_folder(folder)  # VAE and the first encoder; the UNet is replaced below
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=4, cross_attention_dim=48, norm_num_groups=8,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16)
    models.fill_zero_initialised(unet, 0).save_pretrained(folder / "unet")
    tokenizer = write_tokenizer(folder / "tokenizer_2")
    torch.manual_seed(3)
    CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, projection_dim=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0, eos_token_id=1,
        pad_token_id=1)).save_pretrained(folder / "text_encoder_2")
    assert CLIPTextModel.from_pretrained(folder / "text_encoder").config.hidden_size + 16 == 48
    return folder


def read_mp4(path: Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]


def test_sdxl_layout_trains_with_both_text_encoders_and_size_ids(train_files, trained, sdxl_folder):  # noqa: F811
    from i2v_adapter.pipeline.sampling import decode_latents, encode_image
    from i2v_adapter.pipeline.video import write_video
    from i2v_adapter.train.clips import list_clips
    from i2v_adapter.train.loop import train
    from i2v_adapter.train.validation import choose_validation_input

    out = train_files["root"] / "sdxl" / "adapter.safetensors"
    settings = tiny_settings(train_files, out, checkpoint=str(sdxl_folder), steps=3, validate_every=3,
                             validation_steps=2)
    with pytest.raises(ValueError, match="does not fit this run"):  # the SD1.5-layout run's checkpoint
        train(replace(settings, resume=str(trained[0].checkpoints_folder)))
    result = train(settings)
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    weights = load_adapter_weights(out)
    # Two transformer layers per attention block, as SDXL's deeper blocks: every one adapted.
    assert len(weights.layers) == 12 and "input_blocks.4.1.transformer_blocks.1.attn1" in weights.layers
    assert all(layer.out_weight.abs().max() > 0 for layer in weights.layers.values())

    # The validation video: sampled with both text encoders, pooled embeds and size ids; frame 0 the held-out image.
    assert result.validation_videos == [settings.checkpoints_folder / "validation-000003.mp4"]
    frames = read_mp4(result.validation_videos[0])
    assert len(frames) == TRAIN_FRAMES and frames[0].shape == (TRAIN_SIZE, TRAIN_SIZE, 3)
    held_out, _ = choose_validation_input(settings, list_clips(settings.data).clips, "ffmpeg")
    vae = result.parts.vae
    decoded = decode_latents(vae, encode_image(vae, held_out.image, "cpu", torch.float32)[:, :, None])[0]
    # The same picture through the same mp4 writer (yuv420p at 16 px is lossy, and x264 codes frame 0 a little
    # differently when the frames after it differ): about 2 levels on average, where a generated frame is 30-40 off.
    reference = read_mp4(write_video([decoded] * 2, train_files["root"] / "sdxl" / "reference.mp4"))[0]
    frame_zero, later = (np.abs(frame.astype(int) - reference.astype(int)) for frame in frames[:2])
    print(f"SDXL validation video: frame 0 vs decode(z0) of the held-out image, both as mp4: mean "
          f"{frame_zero.mean():.2f}, max {frame_zero.max()} levels; frame 1: mean {later.mean():.2f}")
    assert frame_zero.mean() < 3 and later.mean() > 5 * frame_zero.mean()


def generate_sdxl(train_files, sdxl_folder, image: Path, out: Path, *extra) -> int:  # noqa: F811
    return main([str(a) for a in (
        "generate", "--image", image, "--prompt", "a square", "--checkpoint", sdxl_folder,
        "--motion-module", train_files["motion_module"], "--frames", TRAIN_FRAMES, "--steps", 2,
        "--width", TRAIN_SIZE, "--height", TRAIN_SIZE, "--no-progress", "--no-color-match", "--out", out,
        *TINY_MOTION_ARGS, *extra)])


def png_frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")).astype(int) for path in sorted(folder.glob("*.png"))]


def test_generate_takes_an_sdxl_folder(train_files, sdxl_folder, tmp_path, capsys):  # noqa: F811
    import models
    from i2v_adapter.pipeline.loading import load_model_parts
    from i2v_adapter.pipeline.sampling import decode_latents, encode_image

    parts = load_model_parts(str(sdxl_folder), str(train_files["motion_module"]), **TINY_MOTION)
    assert parts.second_text is not None
    adapter = tmp_path / "sdxl-adapter.safetensors"
    save_adapter_weights(models.random_adapter(parts.unet, std=0.2), adapter)
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (TRAIN_SIZE, TRAIN_SIZE, 3), np.uint8)).save(image)

    videos = {}
    for name, extra in (("training-free", ["--training-free"]), ("adapter", ["--adapter", adapter])):
        assert generate_sdxl(train_files, sdxl_folder, image, tmp_path / name, *extra) == 0
        videos[name] = png_frames(tmp_path / name)
    assert "wrote" in capsys.readouterr().out
    z0 = encode_image(parts.vae, Image.open(image).convert("RGB"), "cpu", torch.float32)
    reference = decode_latents(parts.vae, z0[:, :, None])[0].astype(int)
    for name, frames in videos.items():
        assert len(frames) == TRAIN_FRAMES
        assert np.abs(frames[0] - reference).max() <= 1, name          # frame 0 is decode(z0)
        assert np.abs(frames[1] - reference).mean() > 5, name          # the others are generated
    assert max(np.abs(a - b).max() for a, b in zip(videos["adapter"][1:], videos["training-free"][1:])) > 10

    # Without its second text encoder an SDXL model is one sentence, not a traceback.
    lacking = write_tiny_sdxl_folder(tmp_path / "lacking")
    for part in ("text_encoder_2", "tokenizer_2"):
        for path in sorted((lacking / part).iterdir()):
            path.unlink()
        (lacking / part).rmdir()
    assert generate_sdxl(train_files, lacking, image, tmp_path / "none", "--training-free") == 1
    assert "needs its diffusers folder (text_encoder_2/ and tokenizer_2/" in capsys.readouterr().err


def test_motion_unet_keeps_every_base_tensor_sdxl_embedding_included(train_files, sdxl_folder):  # noqa: F811
    """Every tensor of the base UNet reaches the motion UNet unchanged, SDXL's add_embedding (pooled text and size
    ids) too, which diffusers' block-by-block copy leaves at its random init; the base's tensors are not copied."""
    from diffusers import UNet2DConditionModel

    from i2v_adapter.pipeline.loading import load_model_parts

    base = UNet2DConditionModel.from_pretrained(sdxl_folder / "unet").state_dict()
    motion = load_model_parts(str(sdxl_folder), str(train_files["motion_module"]), **TINY_MOTION).unet.state_dict()
    assert "add_embedding.linear_1.weight" in base
    assert [key for key, tensor in base.items() if not torch.equal(motion[key], tensor)] == []
    assert len(motion) > len(base)  # and the motion module's


def test_noise_schedule_is_the_motion_modules(train_files, sdxl_folder):  # noqa: F811
    """AnimateDiff-SDXL: scaled-linear betas up to 0.020 in training and sampling, as sd-webui-animatediff samples
    it; SD1.5 motion modules: AnimateDiff's linear betas up to 0.012."""
    from i2v_adapter.pipeline.loading import load_model_parts
    from i2v_adapter.pipeline.sampling import make_scheduler
    from i2v_adapter.train.recipe.objective import make_noise_scheduler

    expected = {
        sdxl_folder: torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.020 ** 0.5, 1000) ** 2, 0),
        train_files["checkpoint"]: torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000), 0),
    }
    for checkpoint, alphas_cumprod in expected.items():
        betas = load_model_parts(str(checkpoint), str(train_files["motion_module"]), **TINY_MOTION).betas
        for scheduler in (make_noise_scheduler(betas), make_scheduler("ddim", betas), make_scheduler("euler", betas)):
            torch.testing.assert_close(scheduler.alphas_cumprod, alphas_cumprod, rtol=1e-5, atol=1e-6)
