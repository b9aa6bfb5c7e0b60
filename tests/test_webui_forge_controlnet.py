"""I2V-Adapter with classic Forge's built-in ControlNet and IP-Adapter, through the HTTP API.

Runs only when I2V_FORGE_DIR is set (see test_webui_forge.py) and Forge's ``models/ControlNet`` has an SD1.5
OpenPose ControlNet and an SD1.5 IP-Adapter model; the IP-Adapter case also needs
``models/ControlNetPreprocessor/CLIP-ViT-H-14.safetensors`` (Forge downloads it when online). Random weights
are fine. The requests are the A1111 ones: the same API works on both.
"""
import json
from pathlib import Path

import pytest
import webui_requests

# The server and model fixtures are the Forge module's (one server per module).
from test_webui_forge import FORGE, checkpoint, forge, image, motion_module, reference_frame_zero  # noqa: F401
from webui_requests import (FRAMES, check_frame_zero, check_long_video, i2v_img2img, last_summary, level_difference,
                            plain_i2v_video, pose_unit, video_frames, with_units, write_pose_folder)

pytestmark = pytest.mark.skipif(not FORGE, reason="I2V_FORGE_DIR is not set")


def forge_classic() -> bool:
    """Forge Classic (Haoming02): its ControlNet reads one picture per unit, no folders."""
    version = Path(FORGE or ".") / "modules_forge" / "forge_version.py"
    return version.exists() and 'version = "classic"' in version.read_text()


@pytest.fixture(scope="module")
def controlnet_models(forge):
    return webui_requests.controlnet_models(forge)


@pytest.fixture(scope="module")
def pose_folder(tmp_path_factory):
    return write_pose_folder(tmp_path_factory.mktemp("poses"), frames=16)


@pytest.fixture(scope="module")
def pose(controlnet_models, pose_folder) -> dict:
    """A folder with one pose per frame, or on Forge Classic one pose picture for every frame."""
    import webui_server
    from PIL import Image

    if not forge_classic():
        return pose_unit(controlnet_models["pose"], pose_folder)
    picture = webui_server.encode_png(Image.open(pose_folder / "0004.png"))
    return {"enabled": True, "module": "none", "model": controlnet_models["pose"], "image": picture}


@pytest.fixture(scope="module")
def plain_video(forge, motion_module, image):
    return plain_i2v_video(forge, motion_module, image)


def test_pose_batch_with_context_windows(forge, motion_module, image, reference_frame_zero, controlnet_models,
                                         pose_folder):
    body = with_units(i2v_img2img(motion_module, image, 16, 8), pose_unit(controlnet_models["pose"], pose_folder))
    response = forge.post("/sdapi/v1/img2img", body)
    if forge_classic():
        from i2v_adapter.webui.forge.controlnet import NO_FOLDERS

        print(f"Forge Classic, pose folder: HTTP {response.status_code} {response.text[:200]}")
        assert response.status_code == 422 and response.json()["detail"] == NO_FOLDERS
        return
    check_long_video(forge, video_frames(response), 16, reference_frame_zero)
    assert "ControlNet 0" in json.loads(response.json()["info"])["infotexts"][0]


def test_pose_changes_the_frames_but_not_frame_zero(forge, motion_module, image, reference_frame_zero, pose,
                                                    plain_video):
    body = with_units(i2v_img2img(motion_module, image), pose)
    posed = video_frames(forge.post("/sdapi/v1/img2img", body))
    plain, _ = plain_video
    assert len(posed) == FRAMES
    check_frame_zero("pose", posed[0], reference_frame_zero)
    print(f"pose vs none: frame 1 differs by {level_difference(posed[1], plain[1])} levels")
    assert level_difference(posed[1], plain[1]) > 10


def test_image_as_ip_adapter_content(forge, motion_module, image, reference_frame_zero, controlnet_models,
                                     plain_video):
    response = forge.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, ip_adapter=True,
                                                           ip_adapter_weight=0.8))
    frames = video_frames(response)
    plain, _ = plain_video
    info = json.loads(response.json()["info"])["infotexts"][0]
    assert len(frames) == FRAMES
    check_frame_zero("IP-Adapter", frames[0], reference_frame_zero)
    print(f"IP-Adapter: frame 1 vs without {level_difference(frames[1], plain[1])}; "
          f"{info[info.find('ControlNet 0'):][:200]}")
    assert controlnet_models["ip_adapter"].split(" [")[0] in info and "CLIP-ViT-H (IPAdapter)" in info
    assert "Weight: 0.8" in info and "I2V-Adapter IP-Adapter: True" in info
    assert level_difference(frames[1], plain[1]) > 10


def test_reference_only_keeps_the_branch(forge, motion_module, image, reference_frame_zero, controlnet_models,
                                         plain_video):
    import webui_server

    _, expected = plain_video
    reference = {"enabled": True, "module": "reference_only", "model": "None", "image": webui_server.encode_png(image)}
    frames = video_frames(forge.post("/sdapi/v1/img2img", with_units(i2v_img2img(motion_module, image), reference)))
    summary = last_summary(forge)
    assert len(frames) == FRAMES
    check_frame_zero("reference-only", frames[0], reference_frame_zero)
    print(f"reference-only: attn1 calls {summary} (without reference-only {expected})")
    # Reference-only replaces attn1, yet every attn1 call of the video got the branch, and its write pass
    # (the reference image alone) was left out: the same calls as without it.
    assert summary == expected
