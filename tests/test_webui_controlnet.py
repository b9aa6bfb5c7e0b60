"""I2V-Adapter with sd-webui-controlnet in a real A1111 WebUI, through the HTTP API.

Runs only when I2V_WEBUI_DIR is set (see test_webui_a1111.py) and the WebUI has sd-webui-controlnet with
an SD1.5 OpenPose ControlNet and an SD1.5 IP-Adapter model (random weights are fine).
"""
import json

import pytest
import webui_requests

# The server and model fixtures are the A1111 module's (one server per module).
from test_webui_a1111 import WEBUI, checkpoint, image, motion_module, reference_frame_zero, webui  # noqa: F401
from webui_requests import (FRAMES, check_frame_zero, check_long_video, i2v_img2img, last_summary, level_difference,
                            payload, plain_i2v_video, pose_unit, video_frames, with_units, write_pose_folder)

pytestmark = pytest.mark.skipif(not WEBUI, reason="I2V_WEBUI_DIR is not set")


@pytest.fixture(scope="module")
def controlnet_models(webui):
    return webui_requests.controlnet_models(webui)


@pytest.fixture(scope="module")
def pose_folder(tmp_path_factory):
    return write_pose_folder(tmp_path_factory.mktemp("poses"))


@pytest.fixture(scope="module")
def plain_video(webui, motion_module, image):
    return plain_i2v_video(webui, motion_module, image)


def test_pose_batch_with_context_windows(webui, motion_module, image, reference_frame_zero, controlnet_models,
                                         pose_folder):
    pose = pose_unit(controlnet_models["pose"], pose_folder)
    response = webui.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image, 32, 16), pose))
    check_long_video(webui, video_frames(response), 32, reference_frame_zero)
    assert "ControlNet 0" in json.loads(response.json()["info"])["infotexts"][0]


def test_pose_changes_the_frames_but_not_frame_zero(webui, motion_module, image, reference_frame_zero,
                                                    controlnet_models, pose_folder, plain_video):
    pose = pose_unit(controlnet_models["pose"], pose_folder)
    posed = video_frames(webui.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image), pose)))
    plain, _ = plain_video
    assert len(posed) == FRAMES
    check_frame_zero("pose", posed[0], reference_frame_zero)
    print(f"pose vs none: frame 1 differs by {level_difference(posed[1], plain[1])} levels")
    assert level_difference(posed[1], plain[1]) > 10


def test_image_as_ip_adapter_content(webui, motion_module, image, reference_frame_zero, controlnet_models,
                                     plain_video):
    with_ip = webui.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, ip_adapter=True, ip_adapter_weight=0.8))
    frames = video_frames(with_ip)
    plain, _ = plain_video
    info = json.loads(with_ip.json()["info"])["infotexts"][0]
    assert len(frames) == FRAMES
    check_frame_zero("IP-Adapter", frames[0], reference_frame_zero)
    print(f"IP-Adapter: frame 1 vs without {level_difference(frames[1], plain[1])}")
    assert controlnet_models["ip_adapter"].split(" [")[0] in info and "Weight: 0.8" in info
    assert "I2V-Adapter IP-Adapter: True" in info
    assert level_difference(frames[1], plain[1]) > 10


def test_reference_only_keeps_the_branch(webui, motion_module, image, reference_frame_zero, controlnet_models,
                                         plain_video):
    import webui_server

    _, expected = plain_video
    reference = {"enabled": True, "module": "reference_only", "model": "None", "image": webui_server.encode_png(image)}
    frames = video_frames(webui.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image), reference)))
    summary = last_summary(webui)
    assert len(frames) == FRAMES
    check_frame_zero("reference-only", frames[0], reference_frame_zero)
    print(f"reference-only: attn1 calls {summary} (without reference-only {expected})")
    # Every attn1 call of the video got the branch (reference-only adds style-fidelity calls on the uncond
    # rows); ControlNet's write pass was left alone (not counted).
    assert summary["anchored"] >= expected["anchored"] > 0


def test_animatediff_with_controlnet_through_the_api_makes_a_video(webui, motion_module, image, controlnet_models,
                                                                    pose_folder):
    import webui_server

    # sd-webui-animatediff alone loses the video on API requests with ControlNet units; with I2V on it works.
    pose = pose_unit(controlnet_models["pose"], pose_folder)
    response = webui.post("/sdapi/v1/txt2img", with_units(payload(motion_module), pose))
    first = webui_server.decode_image(response.json()["images"][0])
    print(f"AnimateDiff + ControlNet through the API without I2V: first image {first.format}")
    body = payload(motion_module, i2v={"enable": True, "image": webui_server.encode_png(image), "model": ""})
    video = video_frames(webui.post("/sdapi/v1/txt2img", with_units(body, pose)))
    assert len(video) == FRAMES
