"""Training throughput and memory: samples/s and peak GPU memory of ``train`` at given sizes.

Random weights of the real architectures (nothing is downloaded): an SD1.5 diffusers folder (UNet
320/640/1280/1280, VAE, CLIP text encoder) and an AnimateDiff v2-sized motion module (diffusers
``MotionAdapter`` layout, 32 frames) are written once to a temporary folder, with synthetic clips (a
checkered square crossing a gradient). Each case runs the real trainer for a few steps; the first step
(start-up, worker spawn) is left out of samples/s. ``--tiny`` builds tiny models instead, for a quick check
on a CPU.
Example (GPU): python benchmarks/train_benchmark.py --sizes 256 512 --frames 16 --mixed-precision fp16
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' random-model helpers

from i2v_adapter.pipeline.single_file import SD15_UNET_CONFIG  # noqa: E402
from i2v_adapter.train.loop import train  # noqa: E402
from i2v_adapter.train.settings import TrainSettings  # noqa: E402
from models import fill_zero_initialised  # noqa: E402
from test_pipeline import write_tokenizer  # noqa: E402

TINY_UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
             "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
             "attention_head_dim": 4, "norm_num_groups": 8}


def write_models(root: Path, tiny: bool) -> tuple[Path, Path, dict]:
    """A random base-model folder and motion module; returns them and the motion settings for the trainer."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET_CONFIG))
    fill_zero_initialised(unet, 0).save_pretrained(root / "base" / "unet")
    widths = (8, 16) if tiny else (128, 256, 512, 512)
    AutoencoderKL(block_out_channels=widths, layers_per_block=1 if tiny else 2, norm_num_groups=8 if tiny else 32,
                  down_block_types=("DownEncoderBlock2D",) * len(widths),
                  up_block_types=("UpDecoderBlock2D",) * len(widths)).save_pretrained(root / "base" / "vae")
    vocab = len(write_tokenizer(root / "base" / "tokenizer", 77))
    width = 32 if tiny else 768
    CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2 if tiny else 12,
        num_attention_heads=4 if tiny else 12, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
        pad_token_id=1)).save_pretrained(root / "base" / "text_encoder")
    heads, groups = (4, 8) if tiny else (8, 32)
    motion = MotionAdapter(block_out_channels=unet.config.block_out_channels, motion_layers_per_block=2,
                           motion_num_attention_heads=heads, motion_norm_num_groups=groups,
                           motion_max_seq_length=32, use_motion_mid_block=True)
    save_file(fill_zero_initialised(motion, 1).state_dict(), str(root / "motion.safetensors"))
    return root / "base", root / "motion.safetensors", {"motion_heads": heads, "motion_norm_groups": groups}


def write_clips(folder: Path, count: int, frames: int, side: int) -> Path:
    import imageio_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:side, 0:side]
    for index in range(count):
        rng = np.random.default_rng(index)
        background = np.stack([x * 255 // side, y * 255 // side, np.full_like(x, 90 + index)], -1).astype(np.uint8)
        square = side // 4
        writer = imageio_ffmpeg.write_frames(str(folder / f"clip{index}.mp4"), (side, side), fps=24,
                                             codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
                                             ffmpeg_log_level="error")
        writer.send(None)
        top = int(rng.integers(0, side - square))
        for frame_index in range(frames):
            frame = background.copy()
            left = (frame_index * max(1, side // frames)) % (side - square)
            frame[top:top + square, left:left + square] = (255, 40, 40) if (frame_index // 4) % 2 else (40, 40, 255)
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        (folder / f"clip{index}.txt").write_text("a square moving")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="fp16")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="tiny models (a quick check on a CPU)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        base, motion, motion_settings = write_models(root, args.tiny)
        for size in args.sizes:
            clips = write_clips(root / f"clips{size}", 4, (args.frames - 1) * args.stride + 1, size)
            for checkpointing in (False, True):
                settings = TrainSettings(
                    data=str(clips), checkpoint=str(base), motion_module=str(motion),
                    out=str(root / f"out{size}{checkpointing}.safetensors"), frames=args.frames, resolution=size,
                    stride=args.stride, batch_size=args.batch_size, steps=args.steps,
                    mixed_precision=args.mixed_precision, gradient_checkpointing=checkpointing,
                    workers=args.workers, progress=False, **motion_settings)
                result = train(settings)
                memory = (f"{result.peak_memory_bytes / 2 ** 30:.1f} GiB" if result.peak_memory_bytes is not None
                          else "n/a (CPU)")
                rows.append((size, checkpointing, result.samples_per_second, memory, result.losses[-1]))
                del result
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    print(f"{'size':>5} {'checkpointing':>13} {'samples/s':>10} {'peak memory':>14} {'last loss':>10}"
          f"   ({args.frames} frames, batch {args.batch_size}, {args.mixed_precision})")
    for size, checkpointing, speed, memory, loss in rows:
        print(f"{size:>5} {('on' if checkpointing else 'off'):>13} {speed:>10.2f} {memory:>14} {loss:>10.4f}")


if __name__ == "__main__":
    main()
