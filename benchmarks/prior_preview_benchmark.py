"""Time of the panel's Preview: one VAE encode and one decode of two latents, SD1.5's VAE (random weights).

Example: python benchmarks/prior_preview_benchmark.py --resolution 512 --repeats 3 [--device cuda --fp16]
``--count-flops`` counts the floating-point operations of the same calls instead (meta device: no memory, any size).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2v_adapter.prior_preview import animatediff_alphas_cumprod, preview_prior  # noqa: E402

SD15_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
SCALE_FACTOR = 0.18215


def sd15_vae(device, dtype):
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    encoder, decoder = Encoder(**SD15_VAE), Decoder(**SD15_VAE)
    quant, post_quant = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(4, 4, 1)
    modules = [m.eval().to(device, dtype) for m in (encoder, decoder, quant, post_quant)]

    def encode(image):
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        return modules[2](modules[0](pixels.to(device, dtype))).chunk(2, dim=1)[0] * SCALE_FACTOR

    def decode(latents):
        return modules[1](modules[3](latents.to(device, dtype) / SCALE_FACTOR)).float()

    return encode, decode


def count_flops(resolution: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    encode, decode = sd15_vae("meta", torch.float32)
    image = Image.new("RGB", (resolution, resolution))
    counted = {}
    for name, call in (("encode", lambda: encode(image)),
                       ("decode of 2", lambda: decode(torch.zeros(2, 4, resolution // 8, resolution // 8)))):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            call()
        counted[name] = counter.get_total_flops() / 1e12
    print(f"preview at {resolution}x{resolution}: " + ", ".join(f"{k} {v:.3f} TFLOP" for k, v in counted.items())
          + f", total {sum(counted.values()):.3f} TFLOP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--count-flops", action="store_true", help="count FLOPs instead of timing")
    args = parser.parse_args()
    if args.count_flops:
        return count_flops(args.resolution)
    torch.manual_seed(0)
    encode, decode = sd15_vae(args.device, torch.float16 if args.fp16 else torch.float32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.resolution, args.resolution, 3),
                                                              dtype=np.uint8))
    alphas = animatediff_alphas_cumprod()
    times = []
    for _ in range(args.repeats + 1):  # the first run warms up
        started = time.perf_counter()
        preview_prior(image, encode, decode, 1.0, 0.5, 18.0, 0, alphas)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    print(f"preview at {args.resolution}x{args.resolution} on {args.device}"
          f"{' fp16' if args.fp16 else ''}: median {statistics.median(times[1:]):.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in times[1:])}; warm-up {times[0]:.2f} s)")


if __name__ == "__main__":
    main()
