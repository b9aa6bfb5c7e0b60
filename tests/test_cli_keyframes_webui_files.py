"""``generate --last-image`` and ``--loop`` on a WebUI's own single files: its SD1.5 checkpoint and an
AnimateDiff motion module, as a user points the command line at them.

Runs when I2V_WEBUI_DIR names an A1111 checkout with an SD1.5 checkpoint (random weights are fine) and
sd-webui-animatediff holding an SD1.5 motion module; the CLIP tokenizer comes from the Hugging Face cache.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webui_requests import decoded_first_frame, first_file, last_test_image, level_difference, sd15_motion_module, test_image

from i2v_adapter.cli import main

WEBUI = os.environ.get("I2V_WEBUI_DIR")
pytestmark = pytest.mark.skipif(not WEBUI, reason="I2V_WEBUI_DIR is not set")
FRAMES, SIZE = 12, 64


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = Path(WEBUI)
    folder = tmp_path_factory.mktemp("cli-keyframes")
    test_image().save(folder / "a.png")
    last_test_image().save(folder / "b.png")
    motion = root / "extensions" / "sd-webui-animatediff" / "model"
    return {"checkpoint": first_file(root / "models" / "Stable-diffusion", "*.safetensors"),
            "motion_module": motion / sd15_motion_module(motion), "folder": folder}


def run(files, out, *extra) -> None:
    args = ["generate", "--image", files["folder"] / "a.png", "--prompt", "a cat", "--checkpoint", files["checkpoint"],
            "--motion-module", files["motion_module"], "--training-free", "--frames", FRAMES, "--steps", 2,
            "--width", SIZE, "--height", SIZE, "--no-progress", "--no-color-match", "--out", out, *extra]
    assert main([str(arg) for arg in args]) == 0


def frames_in(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.iterdir())]


def test_generate_from_a_to_b_on_the_webuis_files(files):
    folder = files["folder"]
    videos = []
    for seed in (1, 2):
        run(files, folder / f"seed{seed}", "--last-image", folder / "b.png", "--seed", seed)
        videos.append(frames_in(folder / f"seed{seed}"))
    first_reference = decoded_first_frame(files["checkpoint"], test_image())
    last_reference = decoded_first_frame(files["checkpoint"], last_test_image())
    first, second = videos
    print(f"generate --last-image: frame 0 vs decode(z_A) {level_difference(first[0], first_reference)} levels, "
          f"frame {FRAMES - 1} vs decode(z_B) {level_difference(first[-1], last_reference)}; seeds 1/2: frame 0 "
          f"{level_difference(first[0], second[0])}, last {level_difference(first[-1], second[-1])}, middle "
          f"{level_difference(first[6], second[6])}")
    assert len(first) == FRAMES
    assert level_difference(first[0], first_reference) <= 2 and level_difference(first[-1], last_reference) <= 2
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[-1], second[-1])
    assert level_difference(first[6], second[6]) > 10


def test_generate_loop_on_the_webuis_files(files):
    gif = files["folder"] / "loop.gif"
    run(files, gif, "--loop", "--frames", 8)
    with Image.open(gif) as opened:
        print(f"generate --loop: GIF of {opened.n_frames} frames for 8")
        assert opened.n_frames == 7
