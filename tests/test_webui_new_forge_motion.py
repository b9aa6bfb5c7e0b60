"""End to end in a real Forge 2: what sd-webui-animatediff users expect of its motion section.

Motion only (a plain AnimateDiff video, no picture), closed loops, motion LoRAs, prompt travel and WEBP.
Needs what tests/test_webui_new_forge.py needs, and in models/AnimateDiff/lora random motion LoRAs in the
released layouts: ``v2_lora_ZoomIn.ckpt`` (original keys), ``v2_lora_PanLeft.safetensors`` (re-saved,
underscored keys), a LoRA of other widths named ``sdxl_*`` and a picture-model LoRA named ``*spatial*``.
"""
import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_webui_new_forge import (NEW_FORGE, motion_file, pictures, reference_frame_zero, server, timed_post,  # noqa: F401
                                  txt2img, video_request)
from webui_requests import (as_xyz_plot, check_frame_zero, leaves_the_webui_as_before, level_difference,
                            video_frames)

pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")

LORA_FOLDER = Path(NEW_FORGE or ".") / "models" / "AnimateDiff" / "lora"


def lora_file(pattern: str) -> str:
    found = sorted(LORA_FOLDER.glob(pattern))
    if not found:
        pytest.skip(f"needs a motion LoRA {pattern} in {LORA_FOLDER}")
    return found[0].name


def motion_only(module, frames=8, img2img=False, prompt="a cat", **settings) -> dict:
    import webui_server
    from test_webui_new_forge import test_image

    body = txt2img({"enable": True, "motion_only": True, "motion_module": module, "frames": frames,
                    "formats": ["GIF", "PNG"], **settings}, seed=3, prompt=prompt)
    if img2img:
        body["init_images"] = [webui_server.encode_png(test_image())]
        body["denoising_strength"] = 0.75
    return body


def differences(video):
    return [level_difference(frame, video[0]) for frame in video[1:]]


def last_summary_line(server) -> str:
    lines = [line for line in server.log_text().splitlines() if "attn1 calls with frame 0" in line]
    return lines[-1] if lines else ""


def test_motion_only_txt2img_is_a_plain_animatediff_video(server):
    with leaves_the_webui_as_before(server, txt2img(), "a motion-only video"):
        summaries = server.log_text().count("attn1 calls with frame 0")
        response = timed_post(server, "/sdapi/v1/txt2img", motion_only(motion_file("*v2*.safetensors")))
        video = video_frames(response)
        assert server.log_text().count("attn1 calls with frame 0") == summaries  # no first-frame branch ran
    print(f"motion only, txt2img: frame differences to frame 0 {differences(video)}")
    assert len(video) == 8 and min(differences(video)) > 5
    info = json.loads(response.json()["info"])["infotexts"][0]
    assert "I2V-Adapter motion only: True" in info and "I2V-Adapter t0" not in info


def test_motion_only_img2img_starts_every_frame_from_the_picture(server):
    module = motion_file("*v3*.safetensors")
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", motion_only(module, img2img=True)))
    plain = pictures(server.post("/sdapi/v1/img2img", {**motion_only(module, img2img=True),
                                                        "alwayson_scripts": {}, "batch_size": 8}))
    changes = [level_difference(a, b) for a, b in zip(video, plain)]
    print(f"motion only, img2img: vs the same img2img without motion {changes}")
    assert len(video) == 8 and min(changes) > 5  # the motion module changed every frame


def test_motion_only_refuses_an_image_by_name(server):
    import webui_server
    from test_webui_new_forge import test_image

    body = motion_only(motion_file("*v2*.safetensors"))
    body["alwayson_scripts"]["I2V-Adapter"]["args"][0]["image"] = webui_server.encode_png(test_image())
    response = server.post("/sdapi/v1/txt2img", body)
    print(f"motion only with an image: HTTP {response.status_code} {response.text[:200]}")
    assert response.status_code == 422 and "image is for videos from a picture" in response.json()["detail"]


def test_a_closed_loop_wraps_its_windows(server):
    module = motion_file("*v2*.safetensors")
    body = motion_only(module, frames=16, context_length=8, context_overlap=2, closed_loop="R-P", formats=["WEBP", "PNG"])
    response = timed_post(server, "/sdapi/v1/txt2img", body)
    items = [base64.b64decode(item) for item in response.json()["images"]]
    webp = Image.open(io.BytesIO(items[0]))
    frames = [np.asarray(Image.open(io.BytesIO(item)).convert("RGB")) for item in items[1:]]
    open_body = motion_only(module, frames=16, context_length=8, context_overlap=2, formats=["PNG"])
    plain = [np.asarray(Image.open(io.BytesIO(base64.b64decode(item))).convert("RGB"))
             for item in server.post("/sdapi/v1/txt2img", open_body).json()["images"]]
    seam, open_seam = level_difference(frames[-1], frames[0]), level_difference(plain[-1], plain[0])
    print(f"closed loop: WEBP {webp.format} {webp.n_frames} frames; last vs first {seam} levels "
          f"(without the loop {open_seam}); loop vs open per frame {[level_difference(a, b) for a, b in zip(frames, plain)]}")
    assert webp.format == "WEBP" and webp.n_frames == 16 == len(frames)
    assert any(not np.array_equal(a, b) for a, b in zip(frames, plain))  # the wrapping windows changed the video
    info = json.loads(response.json()["info"])["infotexts"][0]
    assert "I2V-Adapter closed loop: loop" in info


def test_a_closed_loop_with_a_picture_anchors_every_window(server, reference_frame_zero):  # noqa: F811
    from webui_requests import check_long_video

    body = video_request(motion_file("*v2*.safetensors"), frames=16, context_length=8, context_overlap=2,
                         closed_loop="loop")
    check_long_video(server, video_frames(timed_post(server, "/sdapi/v1/img2img", body)), 16, reference_frame_zero)


def test_a_zoom_lora_moves_the_frames_and_keeps_frame_zero(server, reference_frame_zero):  # noqa: F811
    module = motion_file("*v2*.safetensors")
    zoom = lora_file("v2_lora_ZoomIn*")
    plain_request = video_request(module)
    before = video_frames(server.post("/sdapi/v1/img2img", plain_request))
    response = timed_post(server, "/sdapi/v1/img2img",
                          video_request(module, motion_lora=[{"name": zoom, "strength": 1.0}]))
    zoomed = video_frames(response)
    after = video_frames(server.post("/sdapi/v1/img2img", plain_request))
    changes = [level_difference(a, b) for a, b in zip(zoomed, before)]
    print(f"{zoom} at 1: frame differences to the video without it {changes}; "
          f"the same request without it afterwards: {max(map(level_difference, after, before))} levels")
    check_frame_zero("motion LoRA", zoomed[0], reference_frame_zero)
    assert min(changes[1:]) > 5
    assert all(np.array_equal(a, b) for a, b in zip(after, before))  # the cached module is clean again
    info = json.loads(response.json()["info"])["infotexts"][0]
    assert f"I2V-Adapter motion LoRA: \"{zoom}:1\"" in info  # the WebUI quotes values with colons


def test_two_loras_at_once_differ_from_each_alone(server, reference_frame_zero):  # noqa: F811
    module = motion_file("*v2*.safetensors")
    zoom, pan = lora_file("v2_lora_ZoomIn*"), lora_file("v2_lora_PanLeft*")
    videos = {}
    for label, loras in (("zoom", [zoom]), ("pan", [pan]), ("both", [zoom, pan])):
        body = video_request(module, motion_lora=", ".join(f"{name}:0.8" for name in loras))
        videos[label] = video_frames(server.post("/sdapi/v1/img2img", body))
    print(f"two LoRAs: both vs zoom {level_difference(videos['both'][4], videos['zoom'][4])}, "
          f"both vs pan {level_difference(videos['both'][4], videos['pan'][4])} levels at frame 4")
    check_frame_zero("two motion LoRAs", videos["both"][0], reference_frame_zero)
    assert level_difference(videos["both"][4], videos["zoom"][4]) > 5
    assert level_difference(videos["both"][4], videos["pan"][4]) > 5


def test_prompt_travel_changes_the_frames_after_the_keyframe_most(server):
    module = motion_file("*v2*.safetensors")
    cat = video_frames(server.post("/sdapi/v1/txt2img", motion_only(module, prompt="a cat")))
    response = timed_post(server, "/sdapi/v1/txt2img", motion_only(module, prompt="0: a cat\n4: a dog"))
    travelled = video_frames(response)
    changes = [level_difference(a, b) for a, b in zip(travelled, cat)]
    means = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(travelled, cat)]
    print(f"prompt travel 0: a cat / 4: a dog vs 'a cat': max {changes}, mean {[round(m, 1) for m in means]}")
    assert np.mean(means[4:]) > np.mean(means[:4])
    info = json.loads(response.json()["info"])["infotexts"][0]
    assert info.startswith("0: a cat\n4: a dog\n")  # the infotext keeps the whole prompt


def test_prompt_travel_with_a_picture_and_windows(server, reference_frame_zero):  # noqa: F811
    body = video_request(motion_file("*v2*.safetensors"), frames=12, context_length=8, context_overlap=2)
    body["prompt"] = "a garden\n0: a cat\n6: a dog\nmasterpiece"
    body["negative_prompt"] = "blurry"
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", body))
    assert len(video) == 12
    check_frame_zero("prompt travel with I2V and windows", video[0], reference_frame_zero)


@pytest.mark.parametrize("settings, prompt, expected", [
    ({"motion_lora": [{"name": "sdxl"}]}, "a cat", "is a motion LoRA for another motion module than"),
    ({"motion_lora": [{"name": "spatial"}]}, "a cat", "is a LoRA for the picture model"),
    ({"motion_lora": [{"name": "missing_lora.ckpt"}]}, "a cat", "no motion LoRA named 'missing_lora.ckpt'"),
    ({}, "0: a cat\n4:a dog", "is written another way"),
    ({}, "0: a cat\n20: a dog", "names frame 20, but the video has 8 frames"),
    ({"closed_loop": "sometimes"}, "a cat", "closed_loop must be one of"),
])
def test_bad_motion_requests_are_refused_with_one_sentence(server, settings, prompt, expected):
    if settings.get("motion_lora") and settings["motion_lora"][0]["name"] in ("sdxl", "spatial"):
        settings = {"motion_lora": [{"name": lora_file(f"*{settings['motion_lora'][0]['name']}*")}]}
    with leaves_the_webui_as_before(server, txt2img(), f"a refusal ({expected})"):
        body = {**video_request(motion_file("*v2*.safetensors"), **settings), "prompt": prompt}
        response = server.post("/sdapi/v1/img2img", body)
    print(f"{settings} {prompt!r}: HTTP {response.status_code} {response.text[:300]}")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert expected in detail and "\n" not in detail and NEW_FORGE not in detail


def test_xyz_plot_over_the_motion_lora_strength(server):
    module, zoom = motion_file("*v2*.safetensors"), lora_file("v2_lora_ZoomIn*")
    body = video_request(module, frames=4, formats=["GIF", "PNG"], motion_lora=f"{zoom}:1")
    body = as_xyz_plot(server, body, "[I2V-Adapter] motion LoRA strength", "0, 1")
    response = timed_post(server, "/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    infotexts = json.loads(response.json()["info"])["infotexts"]
    strengths = [re.search(r'I2V-Adapter motion LoRA: "[^:]+:([\d.]+)"', text)[1] for text in infotexts[1:]]
    print(f"X/Y/Z cells' motion LoRA strengths: {strengths}")
    assert [float(value) for value in strengths] == [0.0, 1.0]
    without = video_frames(server.post("/sdapi/v1/img2img", video_request(module, frames=4)))
    at_zero = video_frames(server.post("/sdapi/v1/img2img", video_request(module, frames=4, motion_lora=f"{zoom}:0")))
    assert all(np.array_equal(a, b) for a, b in zip(at_zero, without))  # strength 0 is no LoRA, bit for bit


def animatelcm_file() -> str:
    found = sorted((Path(NEW_FORGE) / "models" / "AnimateDiff").glob("AnimateLCM*"))
    if not found:
        pytest.skip("needs an AnimateLCM motion module (released layout, no position tables) in models/AnimateDiff")
    return found[0].name


def test_animatelcm_in_six_lcm_steps_with_its_lora(server, reference_frame_zero):  # noqa: F811
    module = animatelcm_file()
    lcm = {"sampler_name": "LCM", "steps": 6, "cfg_scale": 1.5}
    body = {**motion_only(module, prompt="a cat <lora:AnimateLCM_sd15_t2v_lora:0.8>"), **lcm}
    response = timed_post(server, "/sdapi/v1/txt2img", body)
    video = video_frames(response)
    without_lora = video_frames(server.post("/sdapi/v1/txt2img", {**motion_only(module), **lcm}))
    lora_changes = [level_difference(a, b) for a, b in zip(video, without_lora)]
    print(f"AnimateLCM, LCM 6 steps, CFG 1.5: frame differences to frame 0 {differences(video)}; "
          f"its LoRA at 0.8 changes the frames by {lora_changes}")
    assert len(video) == 8 and min(differences(video)) > 5 and max(lora_changes) > 5
    info = json.loads(response.json()["info"])["infotexts"][0]
    assert f"I2V-Adapter motion module: {module}" in info and "Sampler: LCM" in info and "Steps: 6" in info
    assert "AnimateLCM (original), 21 modules" in server.log_text()
    picture = video_request(module, **{})
    picture.update(lcm)
    anchored = video_frames(timed_post(server, "/sdapi/v1/img2img", picture))
    check_frame_zero("AnimateLCM with a picture, LCM 6 steps", anchored[0], reference_frame_zero)


def test_xyz_plot_over_the_video_quality(server):
    folder = Path(NEW_FORGE) / "outputs" / "img2img-images" / "i2v-adapter"
    before = set(folder.glob("*.mp4"))
    body = as_xyz_plot(server, video_request(motion_file("*v2*.safetensors"), frames=4, formats=["MP4", "PNG"]),
                       "[I2V-Adapter] video quality", "10, 95")
    response = timed_post(server, "/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    infotexts = json.loads(response.json()["info"])["infotexts"]
    qualities = [re.search(r"I2V-Adapter video quality: (\d+)", text)[1] for text in infotexts[1:]]
    videos = sorted(set(folder.glob("*.mp4")) - before)
    sizes = [path.stat().st_size for path in videos]
    print(f"X/Y/Z over the video quality {qualities}: MP4 sizes {sizes}")
    assert qualities == ["10", "95"] and len(videos) == 2 and sizes[0] < sizes[1]
