"""``python -m i2v_adapter generate``: animate one image (or several, one video each) with diffusers and the
engine's hooks; the models are loaded once for all of them."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .pictures import PICTURE_SUFFIXES, read_picture_file
from .pipeline.hub_files import ADAPTER, CLIP_TOKENIZER, MOTION_MODULE, SD15_BASE, fetch
from .prior import OFFICIAL_BLUR_SIGMA, OFFICIAL_P
OUTPUT_FORMATS = ("mp4", "webm", "gif", "webp", "png")

_HELP = ("Animate an image with diffusers: AnimateDiff motion module + I2V-Adapter. Without model flags the "
         "standard files come from the Hugging Face cache (fetched on first use).")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, nargs="+", metavar="IMAGE",
                        help="the first frame; several pictures, or a folder of them, make one video each")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--checkpoint",
                        help="SD1.5 diffusers folder, single-file checkpoint (.safetensors/.ckpt), or a hub id "
                             f"(default: {SD15_BASE.repo_id}, fp16)")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help=f"CLIP tokenizer folder for a single-file checkpoint (default: {CLIP_TOKENIZER.repo_id})")
    parser.add_argument("--motion-module",
                        help="AnimateDiff motion module (v1/v2/v3, .safetensors/.ckpt) or the official ipplus UNet "
                             f"(default: {MOTION_MODULE.filenames[0]} from {MOTION_MODULE.repo_id})")
    adapter = parser.add_mutually_exclusive_group()
    adapter.add_argument("--adapter", help="I2V-Adapter weights, any format `convert` reads "
                                           f"(default: {ADAPTER.filenames[0]} from {ADAPTER.repo_id})")
    adapter.add_argument("--training-free", action="store_true",
                         help="instead of the adapter: first-frame attention with the UNet's own attn1 weights")
    parser.add_argument("--adapter-scale", type=float, default=1.0)
    parser.add_argument("--ip-adapter", metavar="FILE",
                        help="IP-Adapter on the input image (h94 ip-adapter-plus_sd15.bin/.safetensors, or the plain "
                             "ip-adapter_sd15); with the ipplus motion-module file only its image projection is used")
    parser.add_argument("--image-encoder", metavar="DIR",
                        help="CLIP vision model folder for --ip-adapter (h94/IP-Adapter models/image_encoder)")
    parser.add_argument("--ip-adapter-scale", type=float, default=1.0, help="IP-Adapter strength (official: 1.0)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--t0", type=float, default=1.0, help="start noise level as a fraction of the steps (0, 1]")
    parser.add_argument("--p", type=float, default=OFFICIAL_P, help="prior: share of latent elements kept sharp")
    parser.add_argument("--blur-sigma", type=float, default=OFFICIAL_BLUR_SIGMA)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scheduler", default="ddim", choices=("ddim", "euler", "euler_a", "dpm++"))
    parser.add_argument("--width", type=int, help="with --height: exact size; else the official resize")
    parser.add_argument("--height", type=int)
    parser.add_argument("--short-side", type=int, default=512, help="official resize: short side (multiples of 64)")
    parser.add_argument("--context-length", type=int, help="frames per UNet call (default: the motion module's)")
    parser.add_argument("--context-overlap", type=int, default=4)
    parser.add_argument("--no-color-match", action="store_true")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--device", help="cuda, cpu, ... (default: CUDA if present)")
    parser.add_argument("--fp32", action="store_true", help="float32 on GPU too (default fp16 on GPU)")
    parser.add_argument("--motion-heads", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--motion-norm-groups", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true")
    ends = parser.add_mutually_exclusive_group()
    ends.add_argument("--last-image", metavar="IMAGE",
                      help="the video ends exactly on this picture (resized as the first); at least 3 frames")
    ends.add_argument("--loop", action="store_true",
                      help="the video ends on the first picture again and plays as a seamless loop (the file holds "
                           "each frame once)")
    parser.add_argument("--out", required=True,
                        help="one picture: out.mp4, out.webm, out.gif, out.webp, or a folder for PNG frames. Several "
                             "pictures (or a folder): a folder, each video named after its picture in --format "
                             "(e.g. --out clips --format gif writes clips/a.gif, clips/b.gif; png: clips/a/)")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="mp4",
                        help="with several pictures: the format of each video (default mp4)")


def resolve_model_files(args) -> dict[str, str | None]:
    """Each model flag, or else its standard file from the hub cache; one fetch, so all missing ones are named."""
    chosen = {"checkpoint": args.checkpoint, "motion_module": args.motion_module, "adapter": args.adapter,
              "tokenizer": args.tokenizer}
    defaults = {"checkpoint": SD15_BASE, "motion_module": MOTION_MODULE}
    if not args.training_free:
        defaults["adapter"] = ADAPTER
    if args.checkpoint and Path(args.checkpoint).is_file():
        defaults["tokenizer"] = CLIP_TOKENIZER   # the default folder carries its own
    needed = {name: files for name, files in defaults.items() if chosen[name] is None}
    for name, path in zip(needed, fetch(list(needed.values()))):
        chosen[name] = str(path)
    return chosen


def pictures_to_animate(values: list[str]) -> list[Path]:
    """The pictures named, or those of the one folder named (sorted by name); ValueError when a folder has none."""
    if len(values) == 1 and Path(values[0]).is_dir():
        folder = Path(values[0])
        found = sorted(path for path in folder.iterdir() if path.suffix.lower() in PICTURE_SUFFIXES and path.is_file())
        if not found:
            raise ValueError(f"{folder} holds no pictures ({', '.join(PICTURE_SUFFIXES)})")
        return found
    return [Path(value) for value in values]


def video_path(out: str, picture: Path, several: bool, video_format: str) -> Path:
    """``--out`` itself for one picture; for several, ``out/<picture's name>.<format>`` (PNG frames: a folder)."""
    if not several:
        return Path(out)
    suffix = "" if video_format == "png" else f".{video_format}"
    return Path(out) / f"{picture.stem}{suffix}"


def _readable_pictures(paths: list[Path], prepare) -> list[tuple[Path, object]]:
    """Each picture opened and sized; one that cannot be read is named on one line and left out."""
    from PIL import UnidentifiedImageError

    pictures = []
    for path in paths:
        try:
            pictures.append((path, prepare(read_picture_file(path))))
        except (UnidentifiedImageError, OSError) as error:
            if len(paths) == 1:
                raise
            print(f"skipped {path}: not a readable picture ({type(error).__name__})", file=sys.stderr)
    if not pictures:
        raise ValueError("none of the pictures could be read")
    return pictures


def _last_picture(value: str | None):
    """The --last-image picture, or None; an unreadable one is an error naming it."""
    from PIL import UnidentifiedImageError

    if value is None:
        return None
    try:
        return read_picture_file(value)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--last-image {value} is not a readable picture ({type(error).__name__})") from None


def run_generate(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from .pipeline.generate import GenerationRequest, default_device, generate, move_parts, prepare_image
    from .pipeline.loading import load_model_parts
    from .pipeline.sampling import SamplingSettings
    from .pipeline.video import write_video
    from .weights.files import load_adapter_weights

    # The pictures first: a wrong path should not wait for gigabytes of downloads.
    paths = pictures_to_animate(args.image)
    several = len(args.image) > 1 or Path(args.image[0]).is_dir()
    pictures = _readable_pictures(paths, lambda opened: prepare_image(opened, args.width, args.height, args.short_side))
    last_image = _last_picture(args.last_image)
    if (last_image is not None or args.loop) and args.frames < 3:
        raise ValueError(f"a video that ends on a picture (--last-image or --loop) needs at least 3 frames, "
                         f"got --frames {args.frames}")
    files = resolve_model_files(args)
    started = time.perf_counter()
    device = torch.device(args.device) if args.device else default_device()
    dtype = torch.float16 if device.type == "cuda" and not args.fp32 else torch.float32
    parts = load_model_parts(files["checkpoint"], files["motion_module"], files["tokenizer"],
                             args.motion_heads, args.motion_norm_groups, args.ip_adapter, args.image_encoder)
    for note in parts.notes:
        print(f"note: {note}", file=sys.stderr)
    move_parts(parts, device, dtype)
    adapter = load_adapter_weights(files["adapter"]) if files["adapter"] else None
    print(f"loaded the models in {time.perf_counter() - started:.1f} s (once for {len(pictures)} "
          f"picture{'s' if len(pictures) > 1 else ''})", file=sys.stderr)
    progress = None if args.no_progress else (lambda steps: tqdm(steps, desc="sampling", unit="step"))
    ip_text = (f", IP-Adapter {parts.ip_adapter.weights.variant} at {args.ip_adapter_scale:g}"
               if parts.ip_adapter is not None else "")
    adapter_text = f"adapter {Path(files['adapter']).name}" if adapter is not None else "training-free"
    for index, (path, image) in enumerate(pictures):
        # The WebUI's rule for a batch: picture k gets seed + k.
        settings = SamplingSettings(
            frames=args.frames, steps=args.steps, guidance=args.guidance, t0=args.t0, p=args.p,
            blur_sigma=args.blur_sigma, seed=args.seed + index, context_length=args.context_length,
            context_overlap=args.context_overlap,
        )
        request = GenerationRequest(image, args.prompt, args.negative_prompt, settings, args.scheduler, adapter,
                                    args.adapter_scale, args.training_free, not args.no_color_match,
                                    args.ip_adapter_scale, last_image, args.loop)
        clip_started = time.perf_counter()
        result = generate(parts, request, device, progress)
        # A loop's last frame repeats frame 0: the file holds each frame once (PNG frames keep all of them).
        target = video_path(args.out, path, several, args.format)
        looped = args.loop and target.suffix.lower() in (".mp4", ".webm", ".gif", ".webp")
        out = write_video(result.frames[:-1] if looped else result.frames, target, args.fps)
        counter = f"video {index + 1} of {len(pictures)}: " if several else ""
        print(f"{counter}wrote {out}: {len(result.frames)} frames, {image.size[0]}x{image.size[1]}, "
              f"{args.scheduler} {args.steps} steps on {device} ({str(dtype).removeprefix('torch.')}), "
              f"{adapter_text}{ip_text}, seed {settings.seed}, {time.perf_counter() - clip_started:.1f} s")
    return 0


def add_generate_command(subparsers, add_command) -> argparse.ArgumentParser:
    """Register ``generate`` with the CLI's ``_add_command(subparsers, name, function, help)``."""
    parser = add_command(subparsers, "generate", run_generate, _HELP)
    add_generate_arguments(parser)
    return parser
