"""The diffusers sampling loop with the adapter vs without, interleaved in one process.

SD1.5-sized UNet (320/640/1280/1280, cross-attention 768) + AnimateDiff-sized motion module, random
weights (nothing is downloaded), CFG, DDIM. Per step: the UNet call(s), CFG and the scheduler step;
the VAE and text encoder run once per video and are left out. Two comparisons:

- single window: all frames in one UNet call (frame 0 in every chunk), adapter vs none;
- bank path: the same frames in two windows (the second lacks frame 0 and reads its keys/values from
  the bank), adapter vs none with the same windows.

Peak memory: ``torch.cuda.max_memory_allocated`` on GPU; on CPU the peak of the process's resident set
(sampled from /proc every 2 ms) above the level before the run, i.e. activations and temporaries.
Example: python benchmarks/pipeline_benchmark.py --frames 8 --resolution 128 --steps 2 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2v_adapter.weights.adapter import AdapterWeights, LayerWeights  # noqa: E402
from i2v_adapter.hooks import FirstFrameHooks, find_attn1_layers, layer_channels  # noqa: E402
from i2v_adapter.layout import FrameLayout  # noqa: E402
from i2v_adapter.pipeline.sampling import SamplingSettings, make_scheduler, sample_video_latents  # noqa: E402


def sd15_motion_unet(max_frames: int = 32):
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet2d = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8,
    )
    motion = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                           motion_max_seq_length=max_frames, use_motion_mid_block=False)
    return UNetMotionModel.from_unet2d(unet2d, motion).eval()


def random_adapter(unet) -> AdapterWeights:
    layers = {name: LayerWeights(torch.randn(c, c) * 0.02, torch.randn(c, c) * 0.02, torch.randn(c) * 0.02)
              for name, c in layer_channels(find_attn1_layers(unet)).items()}
    return AdapterWeights(layers, source_format="benchmark")


class ResidentPeak:
    """Peak resident set size of this process while the block runs, above its level at entry (Linux)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def above_base(self) -> int:
        return self.peak - self.base


def run_once(unet, z0, embeddings, settings, weights, device) -> tuple[float, int]:
    """(seconds per step, peak bytes) of one sampling loop; hooks installed when ``weights`` is given."""
    windows = 1 if settings.context_length is None else 2
    length = settings.context_length or settings.frames
    layout = FrameLayout(length, 0, keep_reference=windows > 1)
    hooks = FirstFrameHooks(unet, layout, weights) if weights is not None else None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    probe = ResidentPeak() if device.type == "cpu" else None
    if hooks:
        hooks.install()
    try:
        if probe:
            probe.__enter__()
        start = time.perf_counter()
        sample_video_latents(unet, make_scheduler("ddim"), z0, embeddings, settings,
                             layout if hooks else None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / settings.steps
    finally:
        if probe:
            probe.__exit__()
        if hooks:
            hooks.remove()
    if hooks and windows > 1:
        assert layout.stats["banked"] > 0, "the bank path was not taken"
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else probe.above_base
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=128, help="image side in pixels (latent = side / 8)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--half", action="store_true", help="fp16 (GPU)")
    args = parser.parse_args()
    if args.frames < 4 or args.frames % 2:
        parser.error("--frames must be even and at least 4 (the bank path splits it into two windows)")

    device, dtype = torch.device(args.device), torch.float16 if args.half else torch.float32
    torch.manual_seed(0)
    unet = sd15_motion_unet().to(device, dtype)
    weights = random_adapter(unet)
    side = args.resolution // 8
    z0 = torch.randn(1, 4, side, side, device=device, dtype=dtype)
    embeddings = torch.randn(2, 77, 768, device=device, dtype=dtype)
    single = SamplingSettings(frames=args.frames, steps=args.steps)
    banked = SamplingSettings(frames=args.frames, steps=args.steps, context_length=args.frames // 2,
                              context_overlap=0)
    cases = {
        "single, no adapter": (single, None), "single, adapter": (single, weights),
        "2 windows, no adapter": (banked, None), "2 windows, adapter (bank)": (banked, weights),
    }
    print(f"device {device} {str(dtype).removeprefix('torch.')}, {args.frames} frames, "
          f"{args.resolution}x{args.resolution}, {args.steps} DDIM steps, CFG, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")
    with torch.no_grad():
        run_once(unet, z0, embeddings, SamplingSettings(frames=args.frames, steps=1), weights, device)  # warm-up
        results = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (settings, adapter) in cases.items():  # interleaved: drift hits every case alike
                results[name].append(run_once(unet, z0, embeddings, settings, adapter, device))

    summary = {}
    memory_label = "peak alloc" if device.type == "cuda" else "peak RSS above start"
    for name, runs in results.items():
        step = statistics.median(seconds for seconds, _ in runs)
        peak = max(peak for _, peak in runs)
        summary[name] = (step, peak)
        print(f"{name:28s} {step * 1000:9.1f} ms/step   {memory_label} {peak / 2**20:8.1f} MiB")

    def ratio(a, b):
        (ta, ma), (tb, mb) = summary[a], summary[b]
        return f"time x{ta / tb:.3f}, memory x{ma / mb:.3f}" if mb else f"time x{ta / tb:.3f}"

    print(f"adapter / no adapter, single window:   {ratio('single, adapter', 'single, no adapter')}")
    print(f"adapter / no adapter, 2 windows (bank): {ratio('2 windows, adapter (bank)', '2 windows, no adapter')}")
    print(f"bank path / single window, adapter:     {ratio('2 windows, adapter (bank)', 'single, adapter')}")


if __name__ == "__main__":
    main()
