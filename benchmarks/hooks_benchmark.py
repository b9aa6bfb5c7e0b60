"""Time of one UNet forward with the first-frame hooks vs without, interleaved in one process.

SD1.5 geometry (the ldm UNet A1111 uses, random weights), CFG batch of 2 chunks.
Example: python benchmarks/hooks_benchmark.py --frames 16 --resolution 64 --repeats 3
``--count-flops`` counts floating-point operations instead (on the meta device: no memory, any size), for
the plain UNet, training-free mode and a trained adapter.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2v_adapter.weights.adapter import AdapterWeights, LayerWeights  # noqa: E402
from i2v_adapter.hooks import FirstFrameHooks, find_attn1_layers, layer_channels  # noqa: E402
from i2v_adapter.layout import FrameLayout  # noqa: E402


def sd15_unet():
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(image_size=64, in_channels=4, out_channels=4, model_channels=320,
                     attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4],
                     num_heads=8, use_spatial_transformer=True, transformer_depth=1, context_dim=768,
                     legacy=False).eval()


def random_adapter(unet) -> AdapterWeights:
    layers = {name: LayerWeights(torch.randn(c, c) * 0.02, torch.randn(c, c) * 0.02, torch.zeros(c))
              for name, c in layer_channels(find_attn1_layers(unet)).items()}
    return AdapterWeights(layers, source_format="benchmark")


def count_flops(args) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = sd15_unet()
        rows, side = 2 * args.frames, args.resolution // 8
        x = torch.randn(rows, 4, side, side)
        t = torch.full((rows,), 500.0)
        context = torch.randn(rows, 77, 768)
        adapter = random_adapter(unet)

    def flops(weights, with_hooks=True) -> int:
        hooks = FirstFrameHooks(unet, FrameLayout(args.frames), weights)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            if with_hooks:
                with hooks:
                    unet(x, t, context)
            else:
                unet(x, t, context)
        return counter.get_total_flops()

    plain, free, trained = flops(None, with_hooks=False), flops(None), flops(adapter)
    print(f"frames {args.frames}, {args.resolution}x{args.resolution}, batch {rows} rows (FLOPs of one UNet forward)")
    print(f"plain {plain / 1e12:.3f} TFLOP   training-free {free / 1e12:.3f} TFLOP (ratio {free / plain:.4f})   "
          f"trained adapter {trained / 1e12:.3f} TFLOP (ratio {trained / plain:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64, help="image side in pixels (latent = side / 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--half", action="store_true", help="fp16 (GPU)")
    parser.add_argument("--count-flops", action="store_true", help="count FLOPs instead of timing")
    args = parser.parse_args()
    if args.count_flops:
        return count_flops(args)

    dtype = torch.float16 if args.half else torch.float32
    torch.manual_seed(0)
    unet = sd15_unet().to(args.device, dtype)
    rows, side = 2 * args.frames, args.resolution // 8
    x = torch.randn(rows, 4, side, side, device=args.device, dtype=dtype)
    t = torch.full((rows,), 500.0, device=args.device)
    context = torch.randn(rows, 77, 768, device=args.device, dtype=dtype)
    hooks = FirstFrameHooks(unet, FrameLayout(args.frames), random_adapter(unet))

    def timed(with_hooks: bool) -> float:
        if with_hooks:
            hooks.install()
        try:
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                unet(x, t, context)
            if args.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start
        finally:
            hooks.remove()

    timed(False), timed(True)  # warm-up
    plain, adapted = [], []
    for _ in range(args.repeats):
        plain.append(timed(False))
        adapted.append(timed(True))
    plain_s, adapted_s = statistics.median(plain), statistics.median(adapted)
    print(f"frames {args.frames}, {args.resolution}x{args.resolution}, {args.device} {str(dtype)[6:]}, "
          f"batch {rows} rows, {args.repeats} repeats")
    print(f"UNet forward without adapter: {plain_s:.3f} s   with adapter: {adapted_s:.3f} s   "
          f"ratio {adapted_s / plain_s:.3f}")


if __name__ == "__main__":
    main()
