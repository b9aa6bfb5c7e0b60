"""The diffusers host end to end on tiny random models: CLI, loop semantics, motion-module conversion."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2v_adapter.cli import main
from i2v_adapter.hooks import FirstFrameHooks, installed_hook_count
from i2v_adapter.layout import FrameLayout
from i2v_adapter.pipeline.generate import official_size
from i2v_adapter.pipeline.loading import load_model_parts
from i2v_adapter.motion.diffusers_layout import convert_motion_module, motion_adapter_from_state_dict
from i2v_adapter.pipeline.sampling import (
    SamplingSettings,
    context_windows,
    encode_image,
    make_scheduler,
    sample_video_latents,
)
from i2v_adapter.pipeline.text_conditioning import TextConditioning
from i2v_adapter.weights.files import save_adapter_weights

import models

ROOT = Path(__file__).resolve().parents[1]
FRAMES, STEPS, SIZE = 4, 2, 16
TINY_MOTION = {"motion_heads": 4, "motion_norm_groups": 8}
TINY_MOTION_ARGS = ["--motion-heads", "4", "--motion-norm-groups", "8"]


# ---------------------------------------------------------------- tiny model files


def tiny_motion_adapter(mid_block: bool = True, max_frames: int = 24, seed: int = 4):
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=max_frames,
                            use_motion_mid_block=mid_block)
    # diffusers zero-initialises proj_out: random values there, or the motion module would do nothing.
    return models.fill_zero_initialised(adapter, seed)


def to_original_layout(state_dict: dict) -> dict:
    """diffusers MotionAdapter keys -> the original AnimateDiff (mm_sd_v15) keys, pe in both attention blocks."""
    renames = ((".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1."), (".norm1.", ".norms.0."),
               (".norm2.", ".norms.1."), (".norm3.", ".ff_norm."))
    original = {}
    for key, tensor in state_dict.items():
        block, _, rest = key.partition(".motion_modules.")
        index, _, rest = rest.partition(".")
        prefix = f"{block}.motion_modules.{index}.temporal_transformer."
        if rest.endswith(".pos_embed.pe"):
            transformer = rest.removesuffix(".pos_embed.pe")
            for attention in (0, 1):
                original[f"{prefix}{transformer}.attention_blocks.{attention}.pos_encoder.pe"] = tensor.clone()
            continue
        rest = f".{rest}"
        for new, old in renames:
            rest = rest.replace(new, old)
        original[prefix + rest[1:]] = tensor.clone()
    return original


def write_tokenizer(folder: Path, max_length: int = 12):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def write_tiny_diffusers_folder(folder: Path) -> Path:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    models.diffusers_unet(seed=0).save_pretrained(folder / "unet")
    torch.manual_seed(1)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=8, sample_size=SIZE).save_pretrained(folder / "vae")
    tokenizer = write_tokenizer(folder / "tokenizer")
    torch.manual_seed(2)
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=models.CONTEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0, eos_token_id=1,
        pad_token_id=1,
    )).save_pretrained(folder / "text_encoder")
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("pipeline")
    checkpoint = write_tiny_diffusers_folder(root / "tiny-sd")
    motion_module = root / "mm_tiny.safetensors"
    save_file(to_original_layout(tiny_motion_adapter().state_dict()), str(motion_module))
    parts = load_model_parts(str(checkpoint), str(motion_module), **TINY_MOTION)
    adapter = root / "adapter.safetensors"
    save_adapter_weights(models.random_adapter(parts.unet, std=0.2), adapter)
    image = root / "image.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(image)
    return {"root": root, "checkpoint": checkpoint, "motion_module": motion_module, "adapter": adapter,
            "image": image, "parts": parts}


def generate_args(files, out, *extra):
    return ["generate", "--image", files["image"], "--prompt", "a cat", "--negative-prompt", "blur",
            "--checkpoint", files["checkpoint"], "--motion-module", files["motion_module"],
            "--adapter", files["adapter"], "--frames", FRAMES, "--steps", STEPS, "--width", SIZE,
            "--height", SIZE, "--seed", 42, "--out", out, *TINY_MOTION_ARGS, *extra]


@pytest.fixture(scope="module")
def loop(files):
    parts = files["parts"]
    image = Image.open(files["image"]).convert("RGB")
    z0 = encode_image(parts.vae, image, "cpu", torch.float32)
    embeddings, _ = TextConditioning.of_parts(parts).encode(["", "a cat"], "cpu", torch.float32)
    return parts, z0, embeddings


def run_loop(parts, z0, embeddings, scheduler="ddim", hooks=None, **settings):
    settings = SamplingSettings(**{"frames": FRAMES, "steps": STEPS, "guidance": 7.5, **settings})
    layout = hooks.layout if hooks is not None else None
    return sample_video_latents(parts.unet, make_scheduler(scheduler), z0, embeddings, settings, layout)


# ---------------------------------------------------------------- end to end


def test_generate_in_process_writes_a_gif_and_png_frames(files, capsys):
    out = files["root"] / "out.gif"
    assert main([str(a) for a in generate_args(files, out, "--no-progress")]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.n_frames == FRAMES
        assert gif.size == (SIZE, SIZE)

    folder = files["root"] / "frames"
    assert main([str(a) for a in generate_args(files, folder, "--no-progress", "--scheduler", "dpm++")]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(FRAMES)]


def test_one_video_per_picture_with_the_models_loaded_once(files, tmp_path, capsys, monkeypatch):
    import i2v_adapter.pipeline.loading as loading

    rng = np.random.default_rng(1)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"not a picture")
    loads = []
    real_load = loading.load_model_parts
    monkeypatch.setattr(loading, "load_model_parts", lambda *a, **k: loads.append(1) or real_load(*a, **k))

    def frames_of(video_folder):
        return [np.asarray(Image.open(path)) for path in sorted(video_folder.iterdir())]

    args = [str(a) for a in generate_args(files, tmp_path / "clips", "--no-progress", "--format", "png")]
    args[args.index("--image") + 1] = str(folder)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert len(loads) == 1 and "loaded the models" in captured.err and "once for 3 pictures" in captured.err
    assert f"skipped {folder / 'broken.png'}: not a readable picture" in captured.err
    assert "video 3 of 3: wrote" in captured.out
    clips = {name: frames_of(tmp_path / "clips" / name) for name in ("a", "b", "c")}
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["a", "b", "c"]
    # Each clip is the video its picture makes alone, with the seed + k rule of a WebUI batch.
    for index, name in enumerate(("a", "b", "c")):
        alone = [str(a) for a in generate_args(files, tmp_path / f"alone-{name}", "--no-progress",
                                               "--seed", 42 + index)]
        alone[alone.index("--image") + 1] = str(folder / f"{name}.png")
        assert main(alone) == 0
        assert all(np.array_equal(x, y) for x, y in zip(clips[name], frames_of(tmp_path / f"alone-{name}")))
    assert not np.array_equal(clips["a"][0], clips["b"][0]) and not np.array_equal(clips["a"][2], clips["b"][2])

    gifs = [str(a) for a in generate_args(files, tmp_path / "gifs", "--no-progress", "--format", "gif")]
    image_at = gifs.index("--image") + 1
    gifs[image_at:image_at + 1] = [str(folder / "a.png"), str(folder / "b.png")]
    assert main(gifs) == 0
    assert sorted(p.name for p in (tmp_path / "gifs").iterdir()) == ["a.gif", "b.gif"]


def test_a_folder_without_pictures_is_one_error_line(files, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [str(a) for a in generate_args(files, tmp_path / "clips", "--no-progress")]
    args[args.index("--image") + 1] = str(tmp_path / "empty")
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'empty'} holds no pictures (.png, .jpg, .jpeg, " \
                                              ".webp, .bmp, .tif, .tiff)"


def test_generate_subprocess_writes_an_mp4(files):
    import imageio_ffmpeg

    out = files["root"] / "out.mp4"
    result = subprocess.run([sys.executable, "-m", "i2v_adapter", *map(str, generate_args(files, out))],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "sampling" in result.stderr  # the progress bar
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert meta["size"] == (SIZE, SIZE)
    assert sum(1 for _ in reader) == FRAMES



# ---------------------------------------------------------------- loop semantics


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "euler_a", "dpm++"])
def test_frame_zero_of_the_result_is_z0_exactly(loop, scheduler):
    parts, z0, embeddings = loop
    weights = models.random_adapter(parts.unet, std=0.2)
    with FirstFrameHooks(parts.unet, FrameLayout(FRAMES), weights) as hooks:
        latents = run_loop(parts, z0, embeddings, scheduler, hooks)
    assert latents.shape == (1, 4, FRAMES, SIZE // 2, SIZE // 2)
    assert torch.equal(latents[:, :, 0], z0)
    assert torch.isfinite(latents).all()
    assert not torch.equal(latents[:, :, 1], z0)


@pytest.mark.parametrize("guidance,halves", [(7.5, 2), (1.0, 1), (0.5, 1)])
def test_guidance_of_one_or_less_runs_only_the_cond_half(loop, guidance, halves):
    parts, z0, embeddings = loop
    batches = []
    handle = parts.unet.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append((args[0].shape[0], kwargs["encoder_hidden_states"])),
        with_kwargs=True)
    try:
        run_loop(parts, z0, embeddings, guidance=guidance)
    finally:
        handle.remove()
    assert batches and all(batch == halves and len(context) == halves * FRAMES for batch, context in batches)
    if halves == 1:  # the cond prompt, not the negative one
        assert all(torch.equal(context[0], embeddings[1]) for _, context in batches)


def test_unet_sees_z0_for_frame_zero_at_every_step(loop):
    parts, z0, embeddings = loop
    seen = []
    handle = parts.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, :, 0].clone()))
    try:
        run_loop(parts, z0, embeddings, "euler")  # Euler scales its inputs: the overwrite must come after
    finally:
        handle.remove()
    assert len(seen) == STEPS
    assert all(torch.equal(frame, torch.cat([z0, z0])) for frame in seen)


def test_adapter_at_scale_zero_is_bit_identical_to_no_hooks(loop):
    parts, z0, embeddings = loop
    weights = models.random_adapter(parts.unet, std=0.2)
    plain = run_loop(parts, z0, embeddings)
    with FirstFrameHooks(parts.unet, FrameLayout(FRAMES), weights, scale=0.0) as hooks:
        zero = run_loop(parts, z0, embeddings, hooks=hooks)
    with FirstFrameHooks(parts.unet, FrameLayout(FRAMES), weights, scale=1.0) as hooks:
        active = run_loop(parts, z0, embeddings, hooks=hooks)
        assert hooks.layout.stats["anchored"] == len(hooks.layers) * STEPS
    assert installed_hook_count(parts.unet) == 0
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, active, atol=1e-4)


def test_t0_truncates_the_schedule(loop):
    parts, z0, embeddings = loop
    calls = []
    handle = parts.unet.register_forward_pre_hook(lambda m, args: calls.append(1))
    try:
        run_loop(parts, z0, embeddings, steps=4, t0=0.5)
    finally:
        handle.remove()
    assert len(calls) == 2


def test_bank_path_reaches_every_window_and_keeps_frame_zero(loop):
    parts, z0, embeddings = loop
    weights = models.random_adapter(parts.unet, std=0.2)
    frames, length = 6, 4
    layout = FrameLayout(length, 0, keep_reference=True)
    with FirstFrameHooks(parts.unet, layout, weights) as hooks:
        latents = run_loop(parts, z0, embeddings, hooks=hooks, frames=frames, context_length=length,
                           context_overlap=2)
    assert torch.equal(latents[:, :, 0], z0)
    assert layout.stats["banked"] > 0 and layout.stats["unreferenced"] == 0


def test_context_windows_put_frame_zero_first_and_cover_all_frames():
    assert context_windows(4, None, 4) == [[0, 1, 2, 3]]
    windows = context_windows(10, 4, 1)
    assert windows[0][0] == 0
    assert sorted({f for w in windows for f in w}) == list(range(10))
    assert all(len(w) == 4 for w in windows)


def test_official_resize_short_side_and_multiples_of_64():
    assert official_size(1024, 768) == (704, 512)
    assert official_size(512, 512) == (512, 512)


# ---------------------------------------------------------------- motion modules


@pytest.mark.parametrize("mid_block,max_frames", [(False, 24), (True, 32)])
def test_original_animatediff_motion_module_converts_with_every_key_used(mid_block, max_frames):
    reference = tiny_motion_adapter(mid_block, max_frames)
    original = to_original_layout(reference.state_dict())
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight" \
        in original
    converted = convert_motion_module(original)
    assert set(converted) == set(reference.state_dict())
    adapter = motion_adapter_from_state_dict(original, heads=4, norm_groups=8)
    assert adapter.config.use_motion_mid_block == mid_block
    assert adapter.config.motion_max_seq_length == max_frames
    for key, tensor in reference.state_dict().items():
        assert torch.equal(adapter.state_dict()[key], tensor), key


def test_motion_module_with_an_unknown_key_is_refused():
    from i2v_adapter.weights.adapter import WeightsError

    original = to_original_layout(tiny_motion_adapter().state_dict())
    original["down_blocks.0.motion_modules.0.temporal_transformer.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected"):
        motion_adapter_from_state_dict(original, heads=4, norm_groups=8)


@pytest.mark.parametrize("with_prefix", [True, False])
def test_single_file_text_encoder_keys_fit_with_or_without_text_model_prefix(with_prefix):
    from transformers import CLIPTextConfig, CLIPTextModel

    from i2v_adapter.pipeline.single_file import fit_text_model_prefix

    model = CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=8))
    bare = {key.split("text_model.", 1)[-1]: value for key, value in model.state_dict().items()}
    state = {("text_model." + key if with_prefix else key): value for key, value in bare.items()}
    fitted = fit_text_model_prefix(state, model)
    assert set(fitted) == set(model.state_dict())
    missing, unexpected = model.load_state_dict(fitted, strict=False)
    assert not missing and not unexpected


# ---------------------------------------------------------------- keyframes: a last picture, loops


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++"])
def test_a_video_from_a_to_b_holds_both_latents_exactly_and_the_unet_sees_them(loop, scheduler):
    parts, z0, embeddings = loop
    z_last = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    seen = []
    handle = parts.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, :, -1].clone()))
    settings = SamplingSettings(frames=FRAMES, steps=STEPS, guidance=7.5)
    layout = FrameLayout(FRAMES, 0, last_frame=FRAMES - 1)
    try:
        with FirstFrameHooks(parts.unet, layout, models.random_adapter(parts.unet, std=0.2)):
            latents = sample_video_latents(parts.unet, make_scheduler(scheduler), z0, embeddings, settings, layout,
                                           z_last=z_last)
    finally:
        handle.remove()
    assert torch.equal(latents[:, :, 0], z0) and torch.equal(latents[:, :, -1], z_last)
    assert all(torch.equal(frame, torch.cat([z_last, z_last])) for frame in seen) and len(seen) == STEPS
    assert layout.stats["last anchored"] == layout.stats["anchored"] > 0


def test_generate_last_image_and_loop_from_the_command_line(files, tmp_path, capsys):
    from i2v_adapter.pipeline.generate import encode_image
    from i2v_adapter.pipeline.sampling import decode_latents

    parts = files["parts"]
    last = tmp_path / "b.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(last)
    folder = tmp_path / "a-to-b"
    assert main([str(a) for a in generate_args(files, folder, "--no-progress", "--frames", 4, "--last-image", last,
                                               "--no-color-match")]) == 0
    written = [np.asarray(Image.open(path)) for path in sorted(folder.iterdir())]
    decode = lambda path: decode_latents(parts.vae, encode_image(  # noqa: E731
        parts.vae, Image.open(path).convert("RGB"), "cpu", torch.float32)[:, :, None])[0]
    assert len(written) == 4
    assert np.abs(written[0].astype(int) - decode(files["image"])).max() <= 2
    assert np.abs(written[-1].astype(int) - decode(last)).max() <= 2

    gif = tmp_path / "loop.gif"
    assert main([str(a) for a in generate_args(files, gif, "--no-progress", "--frames", 4, "--loop")]) == 0
    with Image.open(gif) as opened:
        assert opened.n_frames == 3  # the repeated last frame is left out: it plays seamlessly
    frames_folder = tmp_path / "loop-frames"
    assert main([str(a) for a in generate_args(files, frames_folder, "--no-progress", "--frames", 4, "--loop")]) == 0
    pngs = [np.asarray(Image.open(path)) for path in sorted(frames_folder.iterdir())]
    assert len(pngs) == 4 and np.array_equal(pngs[0], pngs[-1])

    capsys.readouterr()
    assert main([str(a) for a in generate_args(files, tmp_path / "x.gif", "--frames", 2, "--loop")]) != 0
    assert "needs at least 3 frames" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    assert main([str(a) for a in generate_args(files, tmp_path / "y.gif", "--last-image", broken)]) != 0
    assert f"--last-image {broken} is not a readable picture" in capsys.readouterr().err


def test_a_to_b_in_windows_attends_to_both_keyframes_in_every_window(loop):
    parts, z0, embeddings = loop
    z_last = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    frames, length = 8, 4
    layout = FrameLayout(length, 0, keep_reference=True, last_frame=frames - 1)
    settings = SamplingSettings(frames=frames, steps=STEPS, guidance=7.5, context_length=length, context_overlap=2)
    with FirstFrameHooks(parts.unet, layout, models.random_adapter(parts.unet, std=0.2)):
        latents = sample_video_latents(parts.unet, make_scheduler("ddim"), z0, embeddings, settings, layout,
                                       z_last=z_last)
    assert torch.equal(latents[:, :, 0], z0) and torch.equal(latents[:, :, -1], z_last)
    stats = layout.stats
    assert stats["last missing"] == 0 and stats["unreferenced"] == 0 and stats["priming calls"] > 0
    assert stats["last banked"] > 0 and stats["last from the previous step"] > 0
