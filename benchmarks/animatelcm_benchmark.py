"""Forge 2: UNet calls and wall time to a 16-frame video, AnimateLCM at 6 LCM steps vs AnimateDiff v3 at 25 Euler
steps, in one server process.

Starts the Forge 2 checkout in I2V_NEW_FORGE_DIR (as the real-WebUI tests do) and sends img2img requests with a
picture; the UNet calls are read from each generation's summary line (every UNet call runs each of the 16
attn1 layers once). Example: python benchmarks/animatelcm_benchmark.py --size 64
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
ATTN1_LAYERS = 16  # SD1.5


def request(motion_module: str, sampler: str, steps: int, cfg: float, frames: int, size: int) -> dict:
    import webui_server
    from webui_requests import test_image

    return {"prompt": "a cat", "negative_prompt": "", "steps": steps, "width": size, "height": size,
            "cfg_scale": cfg, "sampler_name": sampler, "seed": 1,
            "init_images": [webui_server.encode_png(test_image().resize((size, size)))],
            "alwayson_scripts": {"I2V-Adapter": {"args": [{
                "enable": True, "model": "", "motion_module": motion_module, "frames": frames, "context_length": 16,
                "formats": ["GIF"]}]}}}


def unet_calls(log_text: str) -> int:
    counts = re.findall(r"attn1 calls with frame 0: (\d+), from the bank: (\d+)", log_text)[-1]
    return (int(counts[0]) + int(counts[1])) // ATTN1_LAYERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    forge = os.environ.get("I2V_NEW_FORGE_DIR")
    if not forge:
        sys.exit("set I2V_NEW_FORGE_DIR to a Forge 2 checkout")
    folder = Path(forge) / "models" / "AnimateDiff"
    lcm = next(iter(sorted(folder.glob("AnimateLCM*"))), None)
    v3 = next(iter(sorted(folder.glob("*v3*"))), None)
    if lcm is None or v3 is None:
        sys.exit(f"needs an AnimateLCM and a v3 motion module in {folder}")
    runs = {"AnimateLCM, LCM 6 steps, CFG 1.5": (lcm.name, "LCM", 6, 1.5),
            "v3, Euler 25 steps, CFG 7": (v3.name, "Euler", 25, 7.0)}

    import webui_server

    results = {}
    log = Path(tempfile.mkdtemp()) / "forge.log"
    with webui_server.running(Path(forge), "I2V_NEW_FORGE", 7872, log, forge=True) as server:
        for label, (module, sampler, steps, cfg) in runs.items():  # warm-up: each module loaded once
            server.post("/sdapi/v1/img2img", request(module, sampler, 1, cfg, args.frames, args.size))
            start = time.perf_counter()
            response = server.post("/sdapi/v1/img2img", request(module, sampler, steps, cfg, args.frames, args.size))
            seconds = time.perf_counter() - start
            assert response.status_code == 200, response.text[:300]
            results[label] = (unet_calls(server.log_text()), seconds)
            print(f"{label}: {results[label][0]} UNet calls, {seconds:.1f} s")
    (fast_calls, fast_time), (slow_calls, slow_time) = results.values()
    print(f"AnimateLCM / v3: UNet calls {fast_calls / slow_calls:.2f}, wall time {fast_time / slow_time:.2f} "
          f"({args.frames} frames, {args.size}x{args.size}, CPU)")


if __name__ == "__main__":
    main()
