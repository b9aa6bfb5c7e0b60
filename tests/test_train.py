"""The trainer on tiny random models of the real architectures and tiny synthetic clips (real mp4 files)."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from i2v_adapter.hooks import FirstFrameHooks, installed_hook_count
from i2v_adapter.layout import FrameLayout
from i2v_adapter.train.settings import TrainSettings
from i2v_adapter.weights.files import describe_weights_file, load_adapter_weights

from test_pipeline import TINY_MOTION, tiny_motion_adapter, to_original_layout, write_tiny_diffusers_folder

CLIP_SIDE, CLIP_FRAMES = 32, 12
TRAIN_SIZE, TRAIN_FRAMES, TRAIN_STRIDE = 16, 4, 2


# ---------------------------------------------------------------- synthetic clips


def moving_square_frames(seed: int, frames: int = CLIP_FRAMES, side: int = CLIP_SIDE) -> list[np.ndarray]:
    """A checkered square crossing a smooth background, a few pixels per frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    background = np.stack([x * 255 // side, y * 255 // side, np.full_like(x, rng.integers(40, 200))], -1)
    colour = rng.integers(0, 256, 3)
    square, speed = side // 3, rng.choice([-2, 2], 2)
    top, left = rng.integers(0, side - square, 2)
    checker = ((np.indices((square, square)).sum(0) // 2) % 2)[..., None]
    texture = np.where(checker, colour, 255 - colour)
    result = []
    for index in range(frames):
        frame = background.copy()
        row = int(np.clip(top + speed[0] * index, 0, side - square))
        column = int(np.clip(left + speed[1] * index, 0, side - square))
        frame[row:row + square, column:column + square] = texture
        result.append(frame.astype(np.uint8))
    return result


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 8) -> Path:
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=9, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def write_clips(folder: Path, count: int = 6, bad: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_mp4(folder / f"clip{index}.mp4", moving_square_frames(index))
        (folder / f"clip{index}.txt").write_text("a square moving")
    if bad:
        (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
        write_mp4(folder / "short.mp4", moving_square_frames(99, frames=3))
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on threads that fight over two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_files(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("train")
    checkpoint = write_tiny_diffusers_folder(root / "tiny-sd")
    motion_module = root / "mm_tiny.safetensors"
    save_file(to_original_layout(tiny_motion_adapter().state_dict()), str(motion_module))
    return {"root": root, "checkpoint": checkpoint, "motion_module": motion_module,
            "clips": write_clips(root / "clips")}


def tiny_settings(files, out: Path, **changes) -> TrainSettings:
    values = dict(data=str(files["clips"]), checkpoint=str(files["checkpoint"]),
                  motion_module=str(files["motion_module"]), out=str(out), frames=TRAIN_FRAMES,
                  resolution=TRAIN_SIZE, stride=TRAIN_STRIDE, batch_size=2, learning_rate=2e-3, steps=30,
                  workers=0, progress=False, motion_heads=TINY_MOTION["motion_heads"],
                  motion_norm_groups=TINY_MOTION["motion_norm_groups"])
    values.update(changes)
    return TrainSettings(**values)


@pytest.fixture(scope="module")
def trained(train_files):
    """24 steps with two data workers and checkpoints every 12 steps."""
    from i2v_adapter.train.loop import train

    out = train_files["root"] / "run" / "adapter.safetensors"
    settings = tiny_settings(train_files, out, steps=24, save_every=12, workers=2)
    return settings, train(settings)


def fresh_parts(files):
    from i2v_adapter.pipeline.loading import load_model_parts

    return load_model_parts(str(files["checkpoint"]), str(files["motion_module"]), **TINY_MOTION)


# ---------------------------------------------------------------- the run


def test_loss_falls_and_only_the_adapter_learns(train_files, trained):
    settings, result = trained
    losses = result.losses
    assert len(losses) == 24 and all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first * 0.99, (first, last)

    # Base UNet and motion module: bit-identical to freshly loaded ones; no hook left behind.
    before = fresh_parts(train_files).unet.state_dict()
    after = result.parts.unet.state_dict()
    assert set(before) == set(after)
    assert any(".motion_modules." in key for key in after)
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed == []
    assert installed_hook_count(result.parts.unet) == 0

    # The adapter: every to_out_ff left zero, every to_q_ff left its copy of to_q.
    weights = load_adapter_weights(settings.out)
    attention = {name: module for name, module in FirstFrameHooks(result.parts.unet, FrameLayout(4)).layers.items()}
    assert set(weights.layers) == set(attention) and len(weights.layers) == result.layers == 6
    for name, layer in weights.layers.items():
        assert layer.out_weight.abs().max() > 0 and layer.out_bias.abs().max() > 0
        assert not torch.equal(layer.q_weight, attention[name].to_q.weight)


def test_unusable_videos_are_skipped_and_counted(trained):
    settings, result = trained
    reasons = {Path(path).name: reason for path, reason in result.skipped.items()}
    assert set(reasons) == {"corrupt.mp4", "short.mp4"}
    assert reasons["corrupt.mp4"].startswith("unreadable")
    assert reasons["short.mp4"] == "too short: 3 frames, a clip of 4 at stride 2 needs 7"
    log = [json.loads(line) for line in (settings.checkpoints_folder / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 25))
    assert log[-1]["skipped"] == 2 and log[-1]["samples_per_s"] > 0


def test_written_file_carries_metadata_loads_in_the_engine_and_changes_the_output(trained):
    settings, result = trained
    info = describe_weights_file(settings.out)
    assert info["format"] == "own" and info["layers"] == 6 and info["parameters"] == result.parameters
    metadata = info["metadata"]
    assert metadata["steps"] == "24" and metadata["resolution"] == str(TRAIN_SIZE)
    assert metadata["motion_module"] == "mm_tiny.safetensors" and metadata["base_model"] == "tiny-sd"
    assert metadata["format"] == "i2v-adapter"

    unet = result.parts.unet
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, TRAIN_FRAMES, 8, 8, generator=generator)
    context = torch.randn(2 * TRAIN_FRAMES, 12, 32, generator=generator)
    with torch.no_grad():
        plain = unet(sample, 500, encoder_hidden_states=context).sample
        with FirstFrameHooks(unet, FrameLayout(TRAIN_FRAMES), load_adapter_weights(settings.out)):
            adapted = unet(sample, 500, encoder_hidden_states=context).sample
    difference = (adapted - plain).abs().max().item()
    assert difference > 1e-3, difference


def test_resume_continues_the_same_loss_curve(train_files, trained):
    from i2v_adapter.train.loop import train

    settings, uninterrupted = trained
    checkpoint = settings.checkpoints_folder / "checkpoint-000012"
    assert (checkpoint / "adapter.safetensors").is_file()
    resumed = train(replace(settings, out=str(train_files["root"] / "resumed" / "adapter.safetensors"),
                            checkpoints_dir=str(train_files["root"] / "resumed"), resume=str(checkpoint),
                            save_every=0, workers=0))
    assert resumed.first_step == 12 and len(resumed.losses) == 12
    np.testing.assert_allclose(resumed.losses, uninterrupted.losses[12:], rtol=1e-5, atol=1e-6)
    final, again = load_adapter_weights(settings.out), load_adapter_weights(resumed.out)
    for name, layer in final.layers.items():
        torch.testing.assert_close(again.layers[name].out_weight, layer.out_weight, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the recipe


def test_frame_zero_is_fed_clean_and_takes_no_part_in_the_loss(train_files):
    from i2v_adapter.train.clips import list_clips
    from i2v_adapter.pipeline.text_conditioning import TextConditioning
    from i2v_adapter.train.data import ClipSamples, collate_samples
    from i2v_adapter.train.recipe.model import FirstFrameAdapter, TrainingHooks
    from i2v_adapter.train.recipe.objective import encode_video, make_noise_scheduler
    from i2v_adapter.train.step import batch_loss

    parts = fresh_parts(train_files)
    parts.unet.requires_grad_(False)
    adapter = FirstFrameAdapter(parts.unet)
    clips = [clip for clip in list_clips(train_files["clips"]).clips if "clip" in clip.path]
    dataset = ClipSamples(clips, TRAIN_FRAMES, TRAIN_STRIDE, TRAIN_SIZE, seed=3, decoder="ffmpeg")
    batch = collate_samples([dataset[0], dataset[1]])
    seen = []
    handle = parts.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        with TrainingHooks(parts.unet, adapter, TRAIN_FRAMES):
            conditioning = TextConditioning.of_parts(parts, (TRAIN_SIZE, TRAIN_SIZE))
            computed = batch_loss(adapter, parts, conditioning, batch, make_noise_scheduler(), 3, 0.0, 0.0, "cpu",
                                  torch.float32)
            grads = []
            computed.prediction.register_hook(grads.append)
            computed.loss.backward()
    finally:
        handle.remove()
    clean = encode_video(parts.vae, batch["pixels"])
    assert torch.equal(seen[0][:, :, 0], clean[:, :, 0])              # frame 0 never noised
    assert not torch.allclose(seen[0][:, :, 1:], clean[:, :, 1:])     # the others are
    assert len(set(computed.draws.timesteps.tolist())) == 2           # one timestep per clip
    gradient = grads[0]
    assert torch.count_nonzero(gradient[:, :, 0]) == 0                # frame 0's loss term is absent
    assert torch.count_nonzero(gradient[:, :, 1:]) == gradient[:, :, 1:].numel()
    # At initialisation the branch adds nothing, yet to_out_ff gets a gradient (from frames 1..).
    assert all(layer.to_out_ff.weight.grad.abs().sum() > 0 for layer in adapter.layers)
    assert all(parameter.grad is None for parameter in parts.unet.parameters())


def test_geometry_comes_from_the_base_model_sd15_and_sdxl():
    from diffusers import UNet2DConditionModel

    from i2v_adapter.pipeline.single_file import SD15_UNET_CONFIG
    from i2v_adapter.train.recipe.model import FirstFrameAdapter

    sdxl = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816)
    with torch.device("meta"):
        sd15_adapter = FirstFrameAdapter(UNet2DConditionModel(**SD15_UNET_CONFIG))
        sdxl_adapter = FirstFrameAdapter(UNet2DConditionModel(**sdxl))
    assert len(sd15_adapter.layers) == 16 and sd15_adapter.parameter_count == 24_793_280
    assert len(sdxl_adapter.layers) == 70
    # 10 layers at 640 channels (2 + 2 down, 3 x 2 up), 60 at 1280 (2 x 10 down, 10 mid, 3 x 10 up).
    assert sdxl_adapter.parameter_count == 10 * (2 * 640 ** 2 + 640) + 60 * (2 * 1280 ** 2 + 1280) == 204_883_200


def test_samples_follow_from_seed_and_number_whatever_the_split():
    from i2v_adapter.train.data import ProcessSampleNumbers

    one = list(ProcessSampleNumbers(4, 1, 0, first_micro_batch=3, micro_batches=2))
    two = [list(ProcessSampleNumbers(2, 2, rank, 3, 2)) for rank in (0, 1)]
    assert one == [12, 13, 14, 15, 16, 17, 18, 19]
    assert two == [[12, 13, 16, 17], [14, 15, 18, 19]]


def test_caption_dropout_and_timesteps_are_drawn_per_sample_number():
    from i2v_adapter.train.recipe.objective import draw

    numbers = torch.arange(2000)
    first = draw(numbers, 5, (1, 1, 1, 1), text_dropout=0.1, image_dropout=0.5)
    again = draw(numbers[1000:1010], 5, (1, 1, 1, 1), 0.1, 0.5)
    assert torch.equal(again.timesteps, first.timesteps[1000:1010]) and torch.equal(again.noise, first.noise[1000:1010])
    assert abs(1 - first.keep_text.float().mean().item() - 0.1) < 0.02
    assert abs(1 - first.keep_image.float().mean().item() - 0.5) < 0.04
    assert first.timesteps.min() >= 0 and first.timesteps.max() <= 999 and len(set(first.timesteps.tolist())) > 800


def test_validation_image_is_centre_cropped_and_keeps_every_clip(tmp_path):
    from PIL import Image

    from i2v_adapter.train.clips import Clip
    from i2v_adapter.train.validation import choose_validation_input

    picture = np.zeros((30, 60, 3), np.uint8)
    picture[:, 20:40] = 255  # a white band in the middle third
    Image.fromarray(picture).save(tmp_path / "wide.png")
    clips = [Clip("a.mp4", "x"), Clip("b.mp4", "y")]
    settings = TrainSettings(data="d", checkpoint="c", motion_module="m", out="o.safetensors", resolution=16,
                             validate_every=5, validation_image=str(tmp_path / "wide.png"), validation_prompt="p")
    chosen, rest = choose_validation_input(settings, clips, "ffmpeg")
    assert chosen.image.size == (16, 16) and chosen.prompt == "p" and rest == clips
    assert np.asarray(chosen.image)[8, 8].min() > 200 and np.asarray(chosen.image)[8, 0].max() < 60


def test_bad_settings_are_one_sentence(train_files, tmp_path):
    with pytest.raises(ValueError, match="--frames must be at least 2"):
        tiny_settings(train_files, tmp_path / "a.safetensors", frames=1)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        tiny_settings(train_files, tmp_path / "a.pth")


def test_late_clips_are_reached_by_seeking_and_match_a_full_decode(tmp_path, monkeypatch):
    import imageio_ffmpeg

    from i2v_adapter.train import decode
    from i2v_adapter.train.decode import SEEK_AFTER, clip_indices, read_clip

    calls = []
    original = decode._decode_ffmpeg
    monkeypatch.setattr(decode, "_decode_ffmpeg", lambda *args: calls.append(args[2:]) or original(*args))

    frames = [np.roll(frame, index, axis=0) for index, frame in enumerate(moving_square_frames(5, frames=120))]
    video = write_mp4(tmp_path / "long.mp4", frames, fps=24)
    reader = imageio_ffmpeg.read_frames(str(video))
    width, height = next(reader)["size"]
    decoded = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    seed = next(s for s in range(100) if clip_indices(120, 4, 3, np.random.default_rng(s))[0] >= SEEK_AFTER)
    indices = clip_indices(120, 4, 3, np.random.default_rng(seed))
    clip = read_clip(str(video), 4, 3, CLIP_SIDE, np.random.default_rng(seed), "ffmpeg")
    for got, index in zip(clip, indices):
        assert np.array_equal(got, decoded[index]), index
    assert len(calls) == 1 and calls[0][0] == indices[0] and calls[0][1] > 0  # one decode, from the seek
