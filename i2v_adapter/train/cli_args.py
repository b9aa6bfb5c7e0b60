"""``python -m i2v_adapter train`` (also under ``accelerate launch -m i2v_adapter train``): its arguments."""
from __future__ import annotations

import argparse
import sys

from .settings import MIXED_PRECISION

_HELP = ("Train an I2V-Adapter on your videos (frozen base model and motion module; one GPU, or many with "
         "`accelerate launch -m i2v_adapter train ...`).")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR|CSV",
                        help="a folder of videos (a .txt caption beside each, optional) or a CSV of path and caption")
    parser.add_argument("--checkpoint", required=True,
                        help="base model: SD1.5 diffusers folder, single-file checkpoint, or a hub id")
    parser.add_argument("--tokenizer", metavar="DIR", help="CLIP tokenizer folder (with a single-file checkpoint)")
    parser.add_argument("--motion-module", required=True, help="AnimateDiff motion module (frozen)")
    parser.add_argument("--out", required=True, metavar="ADAPTER.safetensors", help="the trained adapter")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip, frame 0 included (default 16)")
    parser.add_argument("--resolution", type=int, default=256, help="square training size in pixels (default 256)")
    parser.add_argument("--stride", type=int, default=4, help="take every N-th video frame (default 4)")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per process and micro-step")
    parser.add_argument("--gradient-accumulation", type=int, default=1, metavar="N")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW, constant (paper: 1e-4)")
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="no",
                        help="frozen models in fp16/bf16 under autocast; the adapter stays fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="less memory, about 30%% slower")
    parser.add_argument("--seed", type=int, default=42, help="decides every sample: clip, start, timestep, noise")
    parser.add_argument("--text-dropout", type=float, default=0.1, help="share of empty captions (for CFG)")
    parser.add_argument("--image-dropout", type=float, default=0.1,
                        help="share of unconditional IP-Adapter tokens (with --ip-adapter)")
    parser.add_argument("--resume", metavar="DIR", help="a checkpoint folder, or the checkpoints folder (newest)")
    parser.add_argument("--save-every", type=int, default=0, metavar="N", help="checkpoint every N steps")
    parser.add_argument("--validate-every", type=int, default=0, metavar="N",
                        help="every N steps, a validation video beside the checkpoints")
    parser.add_argument("--validation-image", help="default: frame 0 of one video, held out of training")
    parser.add_argument("--validation-prompt", help="default: that video's caption")
    parser.add_argument("--validation-steps", type=int, default=25)
    parser.add_argument("--checkpoints-dir", metavar="DIR", help="default: <out>-checkpoints beside --out")
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    parser.add_argument("--decoder", choices=("auto", "ffmpeg", "opencv"), default="auto")
    parser.add_argument("--ip-adapter", metavar="FILE", help="IP-Adapter content tokens from frame 0 (frozen)")
    parser.add_argument("--image-encoder", metavar="DIR", help="CLIP vision model folder for --ip-adapter")
    parser.add_argument("--motion-heads", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--motion-norm-groups", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true")


def settings_from_args(args):
    from .settings import TrainSettings

    return TrainSettings(
        data=args.data, checkpoint=args.checkpoint, motion_module=args.motion_module, out=args.out,
        tokenizer=args.tokenizer, frames=args.frames, resolution=args.resolution, stride=args.stride,
        batch_size=args.batch_size, gradient_accumulation=args.gradient_accumulation,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        steps=args.steps, mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed, text_dropout=args.text_dropout, image_dropout=args.image_dropout, resume=args.resume,
        save_every=args.save_every, validate_every=args.validate_every, validation_image=args.validation_image,
        validation_prompt=args.validation_prompt, validation_steps=args.validation_steps,
        checkpoints_dir=args.checkpoints_dir, workers=args.workers, decoder=args.decoder,
        ip_adapter=args.ip_adapter, image_encoder=args.image_encoder, motion_heads=args.motion_heads,
        motion_norm_groups=args.motion_norm_groups, progress=not args.no_progress,
    )


def run_train(args) -> int:
    from .loop import train

    settings = settings_from_args(args)
    result = train(settings)
    if result.main_process:
        losses = result.losses
        # Ten steps each end, fewer in a short run so that the two averages never share a step.
        window = max(1, min(10, len(losses) // 2))
        first = sum(losses[:window]) / window if losses else float("nan")
        last = sum(losses[-window:]) / window if losses else float("nan")
        extra = f", {len(result.skipped)} videos skipped" if result.skipped else ""
        if result.peak_memory_bytes is not None:
            extra += f", peak GPU memory {result.peak_memory_bytes / 2 ** 30:.1f} GiB"
        print(f"wrote {result.out}: {result.layers} layers, {result.parameters:,} parameters, steps "
              f"{result.first_step}..{result.first_step + len(losses)}, loss {first:.4f} -> {last:.4f} "
              f"(first/last {window} steps), {result.samples_per_second:.2f} samples/s{extra}")
    sys.stdout.flush()
    return 0


def add_train_command(subparsers, add_command) -> argparse.ArgumentParser:
    """Register ``train`` with the CLI's ``_add_command(subparsers, name, function, help)``."""
    parser = add_command(subparsers, "train", run_train, _HELP)
    add_train_arguments(parser)
    return parser
