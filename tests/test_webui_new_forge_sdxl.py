"""SDXL videos end to end in a real Forge 2, with this extension's own motion modules.

Runs when I2V_NEW_FORGE_DIR names a Forge 2 checkout (as for tests/test_webui_new_forge.py) and
I2V_NEW_FORGE_SDXL_CHECKPOINT a checkpoint in the sd_xl_base layout (a path, or a name under
models/Stable-diffusion; random weights are fine): the WebUI starts with it. models/AnimateDiff holds the
released layouts of AnimateDiff-SDXL (``mm_sdxl_v10_beta.*``) and HotShot-XL (``hsxl_temporal_layers.*``), and an
SD1.5 module (``*v3*.safetensors``) for the refusal; models/Stable-diffusion an SD1.5 checkpoint
(``*sd15*.safetensors``) for the reverse refusal. SDXL in fp32 on a CPU needs about 17 GB of memory.
"""
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from test_webui_new_forge import NEW_FORGE, first_file, motion_file, timed_post, txt2img
from test_webui_sdxl import SDXL_ADAPTER_FILE, write_sdxl_adapter
from webui_requests import (ADAPTER_FILE, FRAMES, check_frame_zero, check_long_video,
                            check_video_starts_with_the_image, decoded_first_frame, last_summary,
                            leaves_the_webui_as_before, level_difference, test_image, video_frames,
                            write_test_adapter)

CHECKPOINT = os.environ.get("I2V_NEW_FORGE_SDXL_CHECKPOINT")
pytestmark = pytest.mark.skipif(not (NEW_FORGE and CHECKPOINT),
                                reason="I2V_NEW_FORGE_DIR and I2V_NEW_FORGE_SDXL_CHECKPOINT are not both set")

SIZE = 128  # SDXL's three levels at 16x16, 8x8 and 4x4 latent pixels
FAMILIES = {"AnimateDiff-SDXL": "mm_sdxl_v10_beta.*", "HotShot-XL": "hsxl_temporal_layers.*"}


def checkpoint() -> Path:
    path = Path(CHECKPOINT)
    return path if path.is_absolute() else Path(NEW_FORGE) / "models" / "Stable-diffusion" / path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import webui_server

    root = Path(NEW_FORGE)
    write_sdxl_adapter(write_test_adapter(root))  # the SD1.5 one too, for the refusal
    arguments = f"{os.environ.get('I2V_NEW_FORGE_ARGS', '')} --ckpt {checkpoint()}"
    os.environ["I2V_NEW_FORGE_SDXL_ARGS"] = arguments
    for name in ("PYTHON", "PORT"):
        if os.environ.get(f"I2V_NEW_FORGE_{name}"):
            os.environ[f"I2V_NEW_FORGE_SDXL_{name}"] = os.environ[f"I2V_NEW_FORGE_{name}"]
    with webui_server.running(root, "I2V_NEW_FORGE_SDXL", 7873,
                              tmp_path_factory.mktemp("new-forge-sdxl") / "forge.log", forge=True) as webui:
        yield webui


@pytest.fixture(scope="module")
def image():
    return test_image().resize((SIZE, SIZE), Image.LANCZOS)


@pytest.fixture(scope="module")
def reference_frame_zero(image):
    return decoded_first_frame(checkpoint(), image)


def family_file(family: str) -> str:
    return motion_file(FAMILIES[family])


def sdxl_video(module: str, image=None, seed=1, frames=FRAMES, **settings) -> dict:
    import webui_server

    i2v = {"enable": True, "motion_module": module, "frames": frames, "formats": ["GIF", "PNG"],
           "context_length": 0, **settings}
    body = txt2img(i2v, seed=seed, width=SIZE, height=SIZE)
    if image is not None:
        body["init_images"] = [webui_server.encode_png(image)]
    return body


def plain() -> dict:
    return txt2img(width=SIZE, height=SIZE)


@pytest.mark.parametrize("family", FAMILIES)
def test_sdxl_img2img_video_starts_with_the_image(server, family, image, reference_frame_zero):
    module = family_file(family)
    with leaves_the_webui_as_before(server, plain(), f"an SDXL {family} video"):
        first = timed_post(server, "/sdapi/v1/img2img", sdxl_video(module, image, seed=1))
        second = timed_post(server, "/sdapi/v1/img2img", sdxl_video(module, image, seed=2))
    check_video_starts_with_the_image(video_frames(first), video_frames(second), reference_frame_zero)
    info = json.loads(first.json()["info"])["infotexts"][0]
    assert f"I2V-Adapter motion module: {module}" in info
    print(f"{family}: {server.log_text().count(' loaded ' + module)} load lines; {last_summary(server)}")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_sdxl_adapter_file_keeps_frame_zero(server, family, image, reference_frame_zero):
    response = timed_post(server, "/sdapi/v1/img2img",
                          sdxl_video(family_file(family), image, model=SDXL_ADAPTER_FILE, color_match=True))
    video = video_frames(response)
    check_frame_zero(f"{family}, SDXL adapter file", video[0], reference_frame_zero)
    assert level_difference(video[1], reference_frame_zero) > 10
    assert f"I2V-Adapter model: {SDXL_ADAPTER_FILE}" in response.json()["info"]


def test_24_animatediff_sdxl_frames_in_windows_of_16_are_all_anchored(server, image, reference_frame_zero):
    body = sdxl_video(family_file("AnimateDiff-SDXL"), image, frames=24, context_length=16, context_overlap=4,
                      formats=["GIF", "PNG"])
    check_long_video(server, video_frames(timed_post(server, "/sdapi/v1/img2img", body)), 24, reference_frame_zero)


def test_hotshot_runs_in_its_8_frame_windows(server, image, reference_frame_zero):
    body = sdxl_video(family_file("HotShot-XL"), image, frames=12, context_overlap=4)
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", body))
    check_long_video(server, video, 12, reference_frame_zero)


def test_motion_only_sdxl_txt2img_is_a_plain_animatediff_video(server):
    body = txt2img({"enable": True, "motion_only": True, "motion_module": family_file("AnimateDiff-SDXL"),
                    "frames": FRAMES, "formats": ["GIF", "PNG"]}, seed=3, width=SIZE, height=SIZE)
    with leaves_the_webui_as_before(server, plain(), "a motion-only SDXL video"):
        summaries = server.log_text().count("attn1 calls with frame 0")
        video = video_frames(timed_post(server, "/sdapi/v1/txt2img", body))
        assert server.log_text().count("attn1 calls with frame 0") == summaries  # no first-frame branch ran
    differences = [level_difference(frame, video[0]) for frame in video[1:]]
    print(f"motion only, SDXL: frame differences to frame 0 {differences}")
    assert len(video) == FRAMES and min(differences) > 5


@pytest.mark.parametrize("settings, expected", [
    ({"motion_module": "SD15"}, "is a motion module for SD1.5 and {checkpoint} is an SDXL checkpoint"),
    ({"motion_module": "HotShot-XL", "context_length": 16}, "was trained on 8-frame windows"),
    ({"motion_module": "AnimateDiff-SDXL", "model": ADAPTER_FILE},
     f"{ADAPTER_FILE} was made for SD1.5/SD2 (16 attention layers) but the loaded model {{checkpoint}} is SDXL"),
], ids=["sd15-module", "hotshot-window", "sd15-adapter"])
def test_sdxl_mismatches_are_refused_with_one_sentence(server, image, settings, expected):
    module = motion_file("*v3*.safetensors") if settings["motion_module"] == "SD15" else family_file(
        settings["motion_module"])
    body = sdxl_video(module, image, **{key: value for key, value in settings.items() if key != "motion_module"})
    with leaves_the_webui_as_before(server, plain(), f"a refused request ({settings})"):
        response = server.post("/sdapi/v1/img2img", body)
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert expected.format(checkpoint=checkpoint().name) in detail and "\n" not in detail


def test_an_sdxl_module_with_an_sd15_checkpoint_is_refused_naming_both(server, image):
    sd15 = first_file(Path(NEW_FORGE) / "models" / "Stable-diffusion", "*sd15*.safetensors")
    module = family_file("HotShot-XL")
    body = {**sdxl_video(module, image), "override_settings": {"sd_model_checkpoint": sd15.name},
            "override_settings_restore_afterwards": True, "width": 64, "height": 64}
    response = server.post("/sdapi/v1/img2img", body)
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert f"{module} is a motion module for SDXL and {sd15.name} is an SD1.5 checkpoint" in detail


def test_an_sdxl_controlnet_steers_every_frame_and_frame_zero_stays(server, image, reference_frame_zero):
    import numpy as np
    import webui_server

    models = server.get("/controlnet/model_list").json()["model_list"]
    model = next((name for name in models if "sdxl" in name.lower() or "xl" in name.lower()), None)
    if model is None:
        pytest.skip(f"needs an SDXL ControlNet in models/ControlNet (a name with 'xl'), found {models}")
    pose = np.zeros((SIZE, SIZE, 3), np.uint8)
    pose[16:112, 48:80] = 255
    body = sdxl_video(family_file("AnimateDiff-SDXL"), image)
    without = video_frames(server.post("/sdapi/v1/img2img", body))
    unit = {"enabled": True, "module": "None", "model": model, "image": webui_server.encode_png(Image.fromarray(pose))}
    with leaves_the_webui_as_before(server, txt2img(width=SIZE, height=SIZE), "an SDXL ControlNet video"):
        response = timed_post(server, "/sdapi/v1/img2img", {
            **body, "alwayson_scripts": {**body["alwayson_scripts"], "ControlNet": {"args": [unit]}}})
    controlled = video_frames(response)
    changes = [level_difference(a, b) for a, b in zip(controlled, without)]
    print(f"SDXL ControlNet {model}, one picture: frame differences to the video without it {changes}; "
          f"{last_summary(server)}")
    assert len(controlled) == FRAMES
    check_frame_zero("SDXL ControlNet, one picture", controlled[0], reference_frame_zero)
    assert min(changes[1:]) > 10
