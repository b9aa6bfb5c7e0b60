"""What a 16-frame 1024x1024 SDXL video needs on a GPU: an estimate from memory counts, not a GPU measurement.

Builds Forge 2's own SDXL UNet class (``backend.nn.unet``, sd_xl_base's configuration; the checkout in
I2V_NEW_FORGE_DIR) with AnimateDiff-SDXL's 15 temporal modules placed through its block inner modifiers, as a
Forge 2 video runs, random weights in 2-byte floats (bf16 here, as fp16 on a GPU). Then
- counts the weights' bytes,
- measures the activation memory of one UNet call on this CPU at small sizes (peak resident memory above the
  loaded weights, no gradients) and scales it to the target size by the number of latent pixels x UNet rows
  (every activation of the UNet and the temporal modules grows with it; attention kernels on GPUs keep no
  tokens-squared matrices, and at the measured sizes those are small here too).

Example: I2V_NEW_FORGE_DIR=... python benchmarks/sdxl_video_memory.py --frames 16 --size 1024 --measure 256 384
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDXL_UNET = dict(in_channels=4, out_channels=4, model_channels=320, num_res_blocks=2, channel_mult=(1, 2, 4),
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 transformer_depth_middle=10, context_dim=2048, num_head_channels=64, use_spatial_transformer=True,
                 use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential")


def forge_unet_class():
    root = os.environ.get("I2V_NEW_FORGE_DIR")
    if not root:
        sys.exit("set I2V_NEW_FORGE_DIR to a Forge 2 checkout")
    sys.path += [root, str(Path(root) / "packages_3rdparty")]
    sys.argv.append("--always-cpu")  # Forge's backend reads its flags at import
    from backend.nn.unet import IntegratedUNet2DConditionModel

    return IntegratedUNet2DConditionModel


def measured(rows: int, size: int) -> dict:
    """In a child process: peak resident bytes of one UNet call above the resident bytes with the weights loaded."""
    import torch

    sys.path.insert(0, str(ROOT))
    from i2v_adapter.motion import MotionModule, block_inner_modifier

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in 2-byte floats, as a GPU holds it in fp16
    unet = forge_unet_class()(**SDXL_UNET).eval()
    motion = MotionModule((320, 640, 1280), max_frames=32, version="SDXL beta").eval()
    parameters = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in motion.parameters())
    latent = size // 8
    x = torch.randn(rows, 4, latent, latent)
    options = {"cond_or_uncond": [0], "block_inner_modifiers": [block_inner_modifier(motion.slots())]}
    gc.collect()
    before = _resident()
    with torch.no_grad():
        unet(x, timesteps=torch.full((rows,), 500.0), context=torch.randn(rows, 77, 2048),
             y=torch.randn(rows, 2816), transformer_options=options)
    return {"activation_bytes": _peak() - before, "parameters": parameters}


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
        runs.append(per_unit)
        print(f"measured: {args.measure_frames} frames at {size}x{size}: {run['activation_bytes'] / 2**30:.2f} GiB of "
              f"activations (2-byte floats), {per_unit:.0f} bytes per latent pixel and frame; "
              f"{run['parameters'] / 1e9:.2f} G parameters")
    weights = run["parameters"] * 2
    per_unit, latent = max(runs), args.size // 8
    for label, rows in (("CFG > 1 (cond and uncond in one call)", 2 * args.frames), ("CFG 1 (LCM)", args.frames)):
        activations = per_unit * rows * latent ** 2
        print(f"estimate, {args.frames} frames at {args.size}x{args.size} in one window, fp16, {label}: UNet + "
              f"AnimateDiff-SDXL weights {weights / 2**30:.1f} GiB + activations {activations / 2**30:.1f} GiB = "
              f"{(weights + activations) / 2**30:.1f} GiB (text encoders and VAE offloaded while sampling)")


if __name__ == "__main__":
    main()
