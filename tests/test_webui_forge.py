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

import pytest
from webui_requests import (ADAPTER_FILE, FRAMES, check_animatediff_off_is_refused, check_frame_zero,
                            check_long_video, check_video_starts_with_the_image, decoded_first_frame, first_file,
                            leaves_the_webui_as_before, payload, sd15_motion_module, test_image, video_frames,
                            write_test_adapter)

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
    return sd15_motion_module(Path(FORGE) / "extensions" / ANIMATEDIFF_DIR / "model")


@pytest.fixture(scope="module")
def image():
    return test_image()


@pytest.fixture(scope="module")
def reference_frame_zero(checkpoint, image):
    return decoded_first_frame(checkpoint, image)


def timed_post(forge, path, body):
    start = time.time()
    response = forge.post(path, body)
    print(f"{path}: {time.time() - start:.1f} s")
    return response


def test_img2img_video_starts_with_the_image(forge, motion_module, image, reference_frame_zero):
    import webui_server

    encoded = webui_server.encode_png(image)
    i2v = {"enable": True, "model": ADAPTER_FILE, "t0": 1.0, "p": 0.5}
    runs = [timed_post(forge, "/sdapi/v1/img2img", payload(motion_module, seed=seed, i2v=i2v, init_images=[encoded],
                                                           denoising_strength=0.5)) for seed in (1, 2)]
    first, second = (video_frames(run) for run in runs)
    check_video_starts_with_the_image(first, second, reference_frame_zero)
    info = json.loads(runs[0].json()["info"])["infotexts"][0]
    assert f"I2V-Adapter model: {ADAPTER_FILE}" in info and "Denoising strength: 1" in info


def test_txt2img_with_the_panel_image(forge, motion_module, image, reference_frame_zero):
    import webui_server

    i2v = {"enable": True, "image": webui_server.encode_png(image), "model": ""}
    frames = video_frames(timed_post(forge, "/sdapi/v1/txt2img", payload(motion_module, i2v=i2v)))
    assert len(frames) == FRAMES
    check_frame_zero("txt2img", frames[0], reference_frame_zero)


def test_long_video_with_context_windows(forge, motion_module, image, reference_frame_zero):
    import webui_server

    frames, context = 16, 8  # AnimateDiff's shifting windows leave frame 0 out of some UNet calls
    i2v = {"enable": True, "model": ADAPTER_FILE}
    response = timed_post(forge, "/sdapi/v1/img2img", payload(motion_module, frames=frames, context=context, i2v=i2v,
                                                              init_images=[webui_server.encode_png(image)]))
    check_long_video(forge, video_frames(response), frames, reference_frame_zero)


def test_animatediff_off_is_refused(forge, motion_module, image):
    check_animatediff_off_is_refused(forge, motion_module, image)


def test_i2v_runs_and_refused_requests_leave_the_webui_as_before(forge, motion_module, image):
    import webui_server

    # The plain request is whatever AnimateDiff makes of it on Forge (its API bug may return plain pictures).
    with leaves_the_webui_as_before(forge, payload(motion_module), "I2V runs and refused requests"):
        i2v = {"enable": True, "model": ADAPTER_FILE}
        video_frames(timed_post(forge, "/sdapi/v1/img2img", payload(motion_module, i2v=i2v,
                                                                    init_images=[webui_server.encode_png(image)])))
        i2v = {"enable": True, "image": webui_server.encode_png(image), "model": ""}
        video_frames(timed_post(forge, "/sdapi/v1/txt2img", payload(motion_module, i2v=i2v)))
        check_animatediff_off_is_refused(forge, motion_module, image)


# -- sd-webui-animatediff's own motion controls with I2V-Adapter on: prompt travel, closed loop, motion LoRA ---

def test_animatediff_prompt_travel_alongside(forge, motion_module, image, reference_frame_zero):
    from webui_requests import check_prompt_travel_alongside

    check_prompt_travel_alongside(forge, motion_module, image, reference_frame_zero)


def test_animatediff_closed_loop_alongside(forge, motion_module, image, reference_frame_zero):
    from webui_requests import check_closed_loop_alongside

    check_closed_loop_alongside(forge, motion_module, image, reference_frame_zero)


def test_animatediff_motion_lora_alongside(forge, image, reference_frame_zero):
    from webui_requests import check_motion_lora_alongside

    loras = sorted(Path(FORGE).joinpath("models", "Lora").glob("v2_lora_ZoomIn*"))
    if not loras:
        pytest.skip("needs a motion LoRA v2_lora_ZoomIn* in models/Lora that sd-webui-animatediff reads")
    # AnimateDiff's forge branch applies motion LoRAs only through the LyCORIS extension, as <lyco:...>.
    if not any("lycoris" in path.name.lower() for path in (Path(FORGE) / "extensions").iterdir()):
        pytest.skip("classic Forge's AnimateDiff applies motion LoRAs through a1111-sd-webui-lycoris only")
    v2 = first_file(Path(FORGE) / "extensions" / ANIMATEDIFF_DIR / "model", "*v2*")
    check_motion_lora_alongside(forge, v2.name, image, reference_frame_zero, loras[0].stem, tag="lyco")


# -- the cases every WebUI with sd-webui-animatediff shares ------------------------------------------------------

@pytest.fixture(scope="module")
def server(forge):
    return forge


@pytest.fixture(scope="module")
def outputs():
    return Path(FORGE) / "output"


from animatediff_host_cases import *  # noqa: E402,F401,F403  (keyframes, loops, one video per picture)
