"""End to end in a real classic Forge with sd-webui-animatediff's forge/master branch, through the HTTP API.

Runs only when I2V_FORGE_DIR points at a classic Forge checkout (tag ``previous`` or a descendant that still
has ``ldm_patched``) with AnimateDiff in ``extensions/sd-webui-animatediff``, a motion module and an SD1.5
checkpoint (random weights are fine). Optional: I2V_FORGE_PYTHON (Forge's Python), I2V_FORGE_PORT (default
7871), I2V_FORGE_ARGS (extra launch flags). AnimateDiff's files are used as they are: its API bug with
Forge's ControlNet slots must not stop I2V requests.
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from webui_requests import (ADAPTER_FILE, FRAMES, check_animatediff_off_is_refused, check_frame_zero,
                            check_long_video, check_video_starts_with_the_image, decoded_first_frame, first_file,
                            payload, test_image, video_frames, write_test_adapter)

FORGE = os.environ.get("I2V_FORGE_DIR")
pytestmark = pytest.mark.skipif(not FORGE, reason="I2V_FORGE_DIR is not set")

ANIMATEDIFF_DIR = "sd-webui-animatediff"


@pytest.fixture(scope="module")
def forge(tmp_path_factory):
    import webui_server

    root = Path(FORGE)
    write_test_adapter(root)
    with webui_server.running(root, "I2V_FORGE", 7871, tmp_path_factory.mktemp("forge") / "forge.log",
                              forge=True) as server:
        yield server


@pytest.fixture(scope="module")
def checkpoint():
    return first_file(Path(FORGE) / "models" / "Stable-diffusion", "*.safetensors")


@pytest.fixture(scope="module")
def motion_module():
    return first_file(Path(FORGE) / "extensions" / ANIMATEDIFF_DIR / "model", "*.safetensors").name


@pytest.fixture(scope="module")
def image():
    return test_image()


@pytest.fixture(scope="module")
def reference_frame_zero(checkpoint, image):
    return decoded_first_frame(checkpoint, image)


def all_images(response) -> list[np.ndarray]:
    """Every image of a response, GIF frames included, as arrays: what 'bit-identical' compares."""
    import webui_server
    from PIL import ImageSequence

    assert response.status_code == 200, response.text[:500]
    arrays = []
    for item in response.json()["images"]:
        picture = webui_server.decode_image(item)
        arrays += [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(picture)]
    return arrays


def timed_post(forge, path, body):
    start = time.time()
    response = forge.post(path, body)
    print(f"{path}: {time.time() - start:.1f} s")
    return response


@pytest.fixture(scope="module")
def baseline(forge, motion_module):
    """AnimateDiff txt2img before I2V-Adapter ever ran in this server (whatever AnimateDiff makes of it)."""
    return all_images(timed_post(forge, "/sdapi/v1/txt2img", payload(motion_module)))


def test_img2img_video_starts_with_the_image(forge, motion_module, image, reference_frame_zero, baseline):
    import webui_server

    encoded = webui_server.encode_png(image)
    i2v = {"enable": True, "model": ADAPTER_FILE, "t0": 1.0, "p": 0.5}
    runs = [timed_post(forge, "/sdapi/v1/img2img", payload(motion_module, seed=seed, i2v=i2v, init_images=[encoded],
                                                           denoising_strength=0.5)) for seed in (1, 2)]
    first, second = (video_frames(run) for run in runs)
    check_video_starts_with_the_image(first, second, reference_frame_zero)
    info = json.loads(runs[0].json()["info"])["infotexts"][0]
    assert f"I2V-Adapter model: {ADAPTER_FILE}" in info and "Denoising strength: 1" in info


def test_txt2img_with_the_panel_image(forge, motion_module, image, reference_frame_zero, baseline):
    import webui_server

    i2v = {"enable": True, "image": webui_server.encode_png(image), "model": ""}
    frames = video_frames(timed_post(forge, "/sdapi/v1/txt2img", payload(motion_module, i2v=i2v)))
    assert len(frames) == FRAMES
    check_frame_zero("txt2img", frames[0], reference_frame_zero)


def test_long_video_with_context_windows(forge, motion_module, image, reference_frame_zero, baseline):
    import webui_server

    frames, context = 16, 8  # AnimateDiff's shifting windows leave frame 0 out of some UNet calls
    i2v = {"enable": True, "model": ADAPTER_FILE}
    response = timed_post(forge, "/sdapi/v1/img2img", payload(motion_module, frames=frames, context=context, i2v=i2v,
                                                              init_images=[webui_server.encode_png(image)]))
    check_long_video(forge, video_frames(response), frames, reference_frame_zero)


def test_animatediff_off_is_refused(forge, motion_module, image, baseline):
    check_animatediff_off_is_refused(forge, motion_module, image)


def test_zz_extension_off_afterwards_is_bit_identical(forge, motion_module, baseline):
    # Runs last (file order): after every I2V run and the refused request above.
    after = all_images(timed_post(forge, "/sdapi/v1/txt2img", payload(motion_module)))
    assert len(after) == len(baseline)
    assert all(np.array_equal(a, b) for a, b in zip(after, baseline))
