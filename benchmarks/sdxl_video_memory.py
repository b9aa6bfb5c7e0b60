"""What a 16-frame 1024x1024 SDXL video needs on a GPU: an estimate from counts, not a GPU measurement.

Builds SDXL's UNet (diffusers' ``UNet2DConditionModel`` with sd_xl_base's configuration) with AnimateDiff-SDXL's
motion modules (diffusers' ``UNetMotionModel``, random weights), then
- counts the weights (bytes in fp16),
- measures the activation memory of one sampled UNet call on this CPU at small sizes (peak resident memory above
  the loaded weights, fp32, no gradients) and scales it to the target size and fp16 by the number of latent
  pixels x frames (every activation of the UNet and the motion modules grows with it; attention kernels on GPUs
  keep no frames x tokens-squared matrices, and at the measured sizes those are negligible too).

Example: python benchmarks/sdxl_video_memory.py --frames 16 --size 1024 --measure 256 384
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys

SDXL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                                   "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
ADAPTER = dict(block_out_channels=(320, 640, 1280), motion_layers_per_block=2, motion_max_seq_length=32,
               use_motion_mid_block=False, motion_num_attention_heads=8, motion_norm_num_groups=32)


def motion_unet():
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    return UNetMotionModel.from_unet2d(UNet2DConditionModel(**SDXL), MotionAdapter(**ADAPTER)).eval()


def inputs(rows: int, latent: int):
    import torch

    return dict(sample=torch.randn(1, 4, rows, latent, latent), timestep=torch.tensor([500]),
                encoder_hidden_states=torch.randn(1, 77, 2048),
                added_cond_kwargs={"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)})


def measured(frames: int, size: int) -> dict:
    """In a child process: peak resident bytes of one UNet call above the resident bytes with the weights loaded."""
    import torch

    torch.manual_seed(0)
    model = motion_unet()
    weights = sum(p.numel() for p in model.parameters())
    gc.collect()
    before = _resident()
    with torch.no_grad():
        model(**inputs(frames, size // 8))
    return {"activation_bytes": _peak() - before, "parameters": weights}


def _resident() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--measure", type=int, nargs="+", default=[256, 384], help="sizes measured on this CPU")
    parser.add_argument("--measure-frames", type=int, default=4)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measured(*args.child)))
        return
    runs = []
    for size in args.measure:  # one process each, so that each peak is its own
        out = subprocess.run([sys.executable, __file__, "--child", str(args.measure_frames), str(size)],
                             capture_output=True, text=True, check=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        per_unit = run["activation_bytes"] / (args.measure_frames * (size // 8) ** 2)
        runs.append((size, run, per_unit))
        print(f"measured: {args.measure_frames} frames at {size}x{size}: {run['activation_bytes'] / 2**30:.2f} GiB of "
              f"activations (fp32), {per_unit:.0f} bytes per latent pixel and frame")
    parameters = runs[0][1]["parameters"]
    per_unit_fp16 = max(per for _, _, per in runs) / 2
    latent = args.size // 8
    weights = parameters * 2
    for label, rows in (("CFG > 1 (cond and uncond in one call)", 2 * args.frames), ("CFG 1 (LCM)", args.frames)):
        activations = per_unit_fp16 * rows * latent ** 2
        print(f"estimate, {args.frames} frames at {args.size}x{args.size} in one window, fp16, {label}: UNet + "
              f"AnimateDiff-SDXL weights {weights / 2**30:.1f} GiB + activations {activations / 2**30:.1f} GiB = "
              f"{(weights + activations) / 2**30:.1f} GiB (text encoders and VAE offloaded while sampling)")


if __name__ == "__main__":
    main()
