"""I2V-Adapter with sd-webui-controlnet in a real A1111 WebUI, through the HTTP API.

Runs only when I2V_WEBUI_DIR is set (see test_webui_a1111.py) and the WebUI has sd-webui-controlnet with
an SD1.5 OpenPose ControlNet and an SD1.5 IP-Adapter model (random weights are fine).
"""
import json

import pytest
import webui_requests

# The server and model fixtures are the A1111 module's (one server per module).
from test_webui_a1111 import WEBUI, checkpoint, frames_of, image, motion_module, reference_frame_zero, webui  # noqa: F401
from webui_requests import (FRAMES, i2v_img2img, last_summary, level_difference, payload, pose_unit, with_units,
                            write_pose_folder)

pytestmark = pytest.mark.skipif(not WEBUI, reason="I2V_WEBUI_DIR is not set")


@pytest.fixture(scope="module")
def controlnet_models(webui):
    return webui_requests.controlnet_models(webui)


@pytest.fixture(scope="module")
def pose_folder(tmp_path_factory):
    return write_pose_folder(tmp_path_factory.mktemp("poses"))


def test_pose_batch_with_context_windows(webui, motion_module, image, reference_frame_zero, controlnet_models,
                                         pose_folder):
    pose = pose_unit(controlnet_models["pose"], pose_folder)
    response = webui.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image, 32, 16), pose))
    video = frames_of(response)[:32]
    assert len(video) == 32
    print(f"pose batch, 32 frames, context 16: frame 0 vs decode(z0) {level_difference(video[0], reference_frame_zero)}"
          f" levels; hooks {last_summary(webui)}")
    assert level_difference(video[0], reference_frame_zero) <= 2
    summary = last_summary(webui)
    assert summary["banked"] > 0 and summary["unreferenced"] == 0
    assert "ControlNet 0" in json.loads(response.json()["info"])["infotexts"][0]


def test_pose_changes_the_frames_but_not_frame_zero(webui, motion_module, image, reference_frame_zero,
                                                    controlnet_models, pose_folder):
    pose = pose_unit(controlnet_models["pose"], pose_folder)
    posed = frames_of(webui.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image), pose)))[:FRAMES]
    plain = frames_of(webui.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image)))
    assert len(posed) == FRAMES
    print(f"pose vs none: frame 1 differs by {level_difference(posed[1], plain[1])} levels")
    assert level_difference(posed[0], reference_frame_zero) <= 2
    assert level_difference(posed[1], plain[1]) > 10


def test_image_as_ip_adapter_content(webui, motion_module, image, reference_frame_zero, controlnet_models):
    with_ip = webui.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, ip_adapter=True, ip_adapter_weight=0.8))
    frames = frames_of(with_ip)[:FRAMES]
    without = frames_of(webui.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image)))
    info = json.loads(with_ip.json()["info"])["infotexts"][0]
    print(f"IP-Adapter: frame 0 vs decode(z0) {level_difference(frames[0], reference_frame_zero)} levels, "
          f"frame 1 vs without {level_difference(frames[1], without[1])}")
    assert len(frames) == FRAMES
    assert level_difference(frames[0], reference_frame_zero) <= 2
    assert controlnet_models["ip_adapter"].split(" [")[0] in info and "Weight: 0.8" in info
    assert "I2V-Adapter IP-Adapter: True" in info
    assert level_difference(frames[1], without[1]) > 10


def test_reference_only_keeps_the_branch(webui, motion_module, image, reference_frame_zero, controlnet_models):
    import webui_server

    plain = webui.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image))
    assert plain.status_code == 200
    expected = last_summary(webui)
    reference = {"enabled": True, "module": "reference_only", "model": "None", "image": webui_server.encode_png(image)}
    response = webui.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image), reference))
    frames = frames_of(response)[:FRAMES]
    summary = last_summary(webui)
    print(f"reference-only: frame 0 vs decode(z0) {level_difference(frames[0], reference_frame_zero)} levels; "
          f"hooks {summary} (without reference-only {expected})")
    assert len(frames) == FRAMES
    assert level_difference(frames[0], reference_frame_zero) <= 2
    # Every attn1 call of the video got the branch; ControlNet's write pass was left alone (not counted).
    assert summary["anchored"] >= expected["anchored"] > 0


def test_animatediff_with_controlnet_through_the_api_makes_a_video(webui, motion_module, image, controlnet_models,
                                                                    pose_folder):
    # sd-webui-animatediff alone loses the video on API requests with ControlNet units; with I2V on it works.
    pose = pose_unit(controlnet_models["pose"], pose_folder)
    response = webui.post("/sdapi/v1/txt2img", with_units(payload(motion_module), pose))
    import webui_server

    first = webui_server.decode_image(response.json()["images"][0])
    print(f"AnimateDiff + ControlNet through the API without I2V: first image {first.format}")
    body = payload(motion_module, i2v={"enable": True, "image": webui_server.encode_png(image), "model": ""})
    video = frames_of(webui.post("/sdapi/v1/txt2img", with_units(body, pose)))[:FRAMES]
    assert len(video) == FRAMES
