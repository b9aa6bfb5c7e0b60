"""Forge 2: per-step time of a video with the motion module alone vs with I2V-Adapter, in one server process.

Starts the Forge 2 checkout in I2V_NEW_FORGE_DIR (as the real-WebUI tests do, I2V_NEW_FORGE_PYTHON etc.) and
sends interleaved img2img requests through the API. "Motion alone" is the adapter at scale 0 (the branch is
skipped; the motion module runs and frame 0 is kept clean); "with I2V-Adapter" is scale 1 with the adapter
file. Per-step time is (time at 2 * steps - time at steps) / steps, so text encoding, VAE and the video
files cancel out. Example (under the WebUI lock): python benchmarks/forge2_benchmark.py --frames 8 --steps 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def request(motion_module: str, frames: int, steps: int, size: int, scale: float) -> dict:
    import webui_server
    from webui_requests import ADAPTER_FILE, test_image

    return {"prompt": "a cat", "negative_prompt": "", "steps": steps, "width": size, "height": size,
            "cfg_scale": 7, "sampler_name": "Euler", "seed": 1,
            "init_images": [webui_server.encode_png(test_image().resize((size, size)))],
            "alwayson_scripts": {"I2V-Adapter": {"args": [{
                "enable": True, "model": ADAPTER_FILE, "scale": scale, "motion_module": motion_module,
                "frames": frames, "formats": ["GIF"]}]}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--motion-module", default="", help="file name in models/AnimateDiff (default: the first)")
    args = parser.parse_args()
    forge = os.environ.get("I2V_NEW_FORGE_DIR")
    if not forge:
        sys.exit("set I2V_NEW_FORGE_DIR to a Forge 2 checkout")

    import webui_server
    from webui_requests import write_test_adapter

    write_test_adapter(Path(forge))
    log = Path(tempfile.mkdtemp()) / "forge.log"
    times: dict[tuple[str, int], list[float]] = {}
    with webui_server.running(Path(forge), "I2V_NEW_FORGE", 7872, log, forge=True) as server:
        for label, scale in (("warm-up", 1.0),):
            server.post("/sdapi/v1/img2img", request(args.motion_module, args.frames, args.steps, args.size, scale))
        for _ in range(args.repeats):
            for label, scale in (("motion alone", 0.0), ("with I2V-Adapter", 1.0)):
                for steps in (args.steps, 2 * args.steps):
                    start = time.perf_counter()
                    response = server.post("/sdapi/v1/img2img",
                                           request(args.motion_module, args.frames, steps, args.size, scale))
                    response.raise_for_status()
                    times.setdefault((label, steps), []).append(time.perf_counter() - start)
    per_step = {}
    for label in ("motion alone", "with I2V-Adapter"):
        short = statistics.median(times[label, args.steps])
        long = statistics.median(times[label, 2 * args.steps])
        per_step[label] = (long - short) / args.steps
        print(f"{label}: {per_step[label]:.2f} s/step ({args.frames} frames, {args.size} px, "
              f"requests {short:.1f} s / {long:.1f} s)")
    print(f"ratio with I2V-Adapter / motion alone: {per_step['with I2V-Adapter'] / per_step['motion alone']:.3f}")


if __name__ == "__main__":
    main()
