"""``python -m i2v_adapter train`` as a user runs it (CSV data, OpenCV, bf16, checkpointing, validation videos),
and the IP-Adapter content tokens."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2v_adapter.cli import main

from test_pipeline import TINY_MOTION_ARGS
from test_pipeline_ip_adapter import ip_files  # noqa: F401 (fixture)
from test_train import TRAIN_FRAMES, TRAIN_SIZE, TRAIN_STRIDE, one_thread, tiny_settings, train_files  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def train_args(files, data, out, *extra):
    return [str(a) for a in (
        "train", "--data", data, "--checkpoint", files["checkpoint"], "--motion-module", files["motion_module"],
        "--out", out, "--frames", TRAIN_FRAMES, "--resolution", TRAIN_SIZE, "--stride", TRAIN_STRIDE,
        "--batch-size", 1, "--workers", 0, *TINY_MOTION_ARGS, *extra)]


def test_train_command_with_a_csv_opencv_bf16_checkpointing_and_validation(train_files, tmp_path, capsys):
    clips = train_files["clips"]
    table = tmp_path / "clips.csv"
    table.write_text(f'path,caption\n{clips / "clip0.mp4"},a square\n{clips / "clip1.mp4"},"a square, moving"\n'
                     f'missing.mp4,gone\n{clips / "corrupt.mp4"},broken\n')
    out = tmp_path / "trained.safetensors"
    command = [sys.executable, "-m", "i2v_adapter", *train_args(
        train_files, table, out, "--decoder", "opencv", "--mixed-precision", "bf16", "--gradient-checkpointing",
        "--steps", 2, "--save-every", 1, "--validate-every", 2, "--validation-steps", 2)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 listed files missing" in result.stderr
    assert "training" in result.stderr and "samples_s=" in result.stderr    # the progress bar
    assert f"wrote {out}: 6 layers, 18,656 parameters, steps 0..2" in result.stdout
    checkpoints = tmp_path / "trained-checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint-000001", "checkpoint-000002", "log.jsonl", "validation-000002.mp4"]
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(checkpoints / "validation-000002.mp4"))
    assert next(reader)["size"] == (TRAIN_SIZE, TRAIN_SIZE)
    assert sum(1 for _ in reader) == TRAIN_FRAMES

    assert main(["inspect", str(out)]) == 0
    report = capsys.readouterr().out
    assert "adapter layers:  6" in report and "steps=2" in report and "resolution=16" in report
    assert "motion_module=mm_tiny.safetensors" in report and "trained_by=i2v-adapter train" in report

    # generate reads the trained file like any adapter.
    image = tmp_path / "first.png"
    Image.fromarray(np.full((TRAIN_SIZE, TRAIN_SIZE, 3), 120, np.uint8)).save(image)
    video = tmp_path / "video.gif"
    assert main([str(a) for a in (
        "generate", "--image", image, "--prompt", "a square", "--checkpoint", train_files["checkpoint"],
        "--motion-module", train_files["motion_module"], "--adapter", out, "--frames", TRAIN_FRAMES,
        "--steps", 2, "--width", TRAIN_SIZE, "--height", TRAIN_SIZE, "--no-progress", "--out", video,
        *TINY_MOTION_ARGS)]) == 0
    assert video.is_file()


def test_bad_data_is_one_error_line(train_files, tmp_path, capsys):
    assert main(train_args(train_files, tmp_path / "nothing", tmp_path / "a.safetensors", "--steps", 1)) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nothing'}: no such folder or file"

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    for name in ("corrupt.mp4", "short.mp4"):
        (only_bad / name).write_bytes((train_files["clips"] / name).read_bytes())
    assert main(train_args(train_files, only_bad, tmp_path / "a.safetensors", "--steps", 1)) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: none of the 2 videos gives a clip of 4 frames at stride 2; first: ")
    assert "\n" not in error


def test_fp16_without_a_gpu_is_one_error_line(train_files, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("fp16 runs on this machine's GPU")
    out = tmp_path / "a.safetensors"
    args = train_args(train_files, train_files["clips"], out, "--steps", 1, "--mixed-precision", "fp16")
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == "error: --mixed-precision fp16 needs a GPU; on the CPU use bf16 or no"
    assert not out.exists()


def test_ip_adapter_tokens_from_frame_zero(train_files, ip_files):  # noqa: F811
    from i2v_adapter.train.loop import train

    settings = tiny_settings(train_files, ip_files["root"] / "ip" / "adapter.safetensors", steps=2,
                             checkpoint=str(ip_files["checkpoint"]), motion_module=str(ip_files["motion_module"]),
                             ip_adapter=str(ip_files["plus"]), image_encoder=str(ip_files["encoder"]))
    result = train(settings)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    parts = result.parts
    assert not parts.ip_adapter.patch.installed          # taken off with the branch after training
    assert parts.unet.encoder_hid_proj is None

    from i2v_adapter.train.step import first_frame_tokens

    pixels = torch.randint(0, 256, (2, TRAIN_FRAMES, 3, TRAIN_SIZE, TRAIN_SIZE), dtype=torch.uint8)
    tokens = first_frame_tokens(parts.ip_adapter, pixels, torch.tensor([True, False]), "cpu", torch.float32)
    assert tokens.shape[:2] == (2, 1)
    from i2v_adapter.pipeline.ip_adapter import encode_ip_image

    image = Image.fromarray(pixels[0, 0].permute(1, 2, 0).numpy())
    uncond, cond = encode_ip_image(parts.ip_adapter.encoder, parts.ip_adapter.weights.variant, image, "cpu",
                                   torch.float32)
    assert torch.equal(tokens[0], cond)                   # kept: frame 0's own tokens
    assert not torch.equal(tokens[1], cond) and torch.equal(tokens[1], uncond)  # dropped: the all-zero image's
