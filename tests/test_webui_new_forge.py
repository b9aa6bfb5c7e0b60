"""End to end in a real Forge 2 (``backend/``, gradio 4), where the extension brings its own motion modules.

Runs only when I2V_NEW_FORGE_DIR points at a checkout of lllyasviel/stable-diffusion-webui-forge ``main`` with
an SD1.5 checkpoint in models/Stable-diffusion and AnimateDiff SD1.5 motion modules in models/AnimateDiff
(random weights of the real shapes are fine): a v2 and a v3 one in safetensors (names with "v2"/"v3"), a v1
one as a pickle. Optional: I2V_NEW_FORGE_PYTHON, I2V_NEW_FORGE_PORT (default 7872), I2V_NEW_FORGE_ARGS.
"""
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence
from webui_requests import (ADAPTER_FILE, FRAMES, SIZE, as_xyz_plot, check_frame_zero, check_long_video,
                            check_video_starts_with_the_image, decoded_first_frame, first_file,
                            leaves_the_webui_as_before, level_difference, test_image, video_frames,
                            write_test_adapter)

NEW_FORGE = os.environ.get("I2V_NEW_FORGE_DIR")
pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")

CORRUPT_FILE = "zz_i2v_test_corrupt.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import webui_fault
    import webui_server

    root = Path(NEW_FORGE)
    write_test_adapter(root)
    webui_fault.install(root)
    try:
        with webui_server.running(root, "I2V_NEW_FORGE", 7872,
                                  tmp_path_factory.mktemp("new-forge") / "forge.log", forge=True) as webui:
            yield webui
    finally:
        webui_fault.remove(root)


def motion_file(pattern: str) -> str:
    return first_file(Path(NEW_FORGE) / "models" / "AnimateDiff", pattern).name


@pytest.fixture(scope="module")
def reference_frame_zero():
    checkpoint = first_file(Path(NEW_FORGE) / "models" / "Stable-diffusion", "*.safetensors")
    return decoded_first_frame(checkpoint, test_image())


def txt2img(i2v=None, **extra) -> dict:
    body = {**dict(prompt="a cat", negative_prompt="", steps=2, width=SIZE, height=SIZE, cfg_scale=7,
                   sampler_name="Euler", seed=1), **extra}
    if i2v is not None:
        body["alwayson_scripts"] = {"I2V-Adapter": {"args": [i2v]}}
    return body


def video_request(motion_module, frames=FRAMES, seed=1, img2img=True, **i2v) -> dict:
    import webui_server

    image = webui_server.encode_png(test_image())
    settings = {"enable": True, "model": ADAPTER_FILE, "motion_module": motion_module, "frames": frames,
                "formats": ["GIF", "PNG"], **i2v}
    if img2img:
        return txt2img(settings, seed=seed, init_images=[image])
    return txt2img({"image": image, **settings}, seed=seed)


def pictures(response) -> list[np.ndarray]:
    import webui_server

    assert response.status_code == 200, response.text[:500]
    return [np.asarray(webui_server.decode_image(item).convert("RGB")) for item in response.json()["images"]]


def timed_post(server, path, body):
    start = time.time()
    response = server.post(path, body)
    print(f"{path}: {time.time() - start:.1f} s")
    return response


def test_the_extension_loads_without_errors(server):
    scripts = server.get("/sdapi/v1/scripts").json()
    assert "i2v-adapter" in scripts["txt2img"] and "i2v-adapter" in scripts["img2img"]
    # The WebUI reports each failure as a block from "*** message" to "---". A test checkout has no git
    # remote, so the WebUI's "Failed reading extension data from Git" about it is expected.
    errors = re.findall(r"^\*\*\* (.*?)^---$", server.log_text(), re.MULTILINE | re.DOTALL)
    ours = [block[:300] for block in errors
            if "i2v" in block.lower() and not block.startswith("Failed reading extension data")]
    print(f"startup error blocks: {len(errors)}, about I2V-Adapter: {len(ours)}")
    assert ours == []


def test_the_panel_has_a_motion_section(server):
    components = server.get("/config").json()["components"]
    elem_ids = {c.get("props", {}).get("elem_id") for c in components}
    for tab in ("txt2img", "img2img"):
        assert {f"{tab}_i2v_adapter_enable", f"{tab}_i2v_adapter_motion_module", f"{tab}_i2v_adapter_frames",
                f"{tab}_i2v_adapter_fps", f"{tab}_i2v_adapter_context_length", f"{tab}_i2v_adapter_context_overlap",
                f"{tab}_i2v_adapter_formats"} <= elem_ids
    choices = server.dropdown_choices("txt2img_i2v_adapter_motion_module")
    print(f"motion modules listed: {choices}")
    assert motion_file("*v2*.safetensors") in choices


def test_img2img_video_starts_with_the_image(server, reference_frame_zero):
    module = motion_file("*v2*.safetensors")
    first = timed_post(server, "/sdapi/v1/img2img", video_request(module, seed=1, formats=["GIF", "PNG"]))
    second = server.post("/sdapi/v1/img2img", video_request(module, seed=2))
    check_video_starts_with_the_image(video_frames(first), video_frames(second), reference_frame_zero)
    infotext = first.json()["info"]
    assert f"I2V-Adapter motion module: {module}" in infotext and f"I2V-Adapter frames: {FRAMES}" in infotext


def test_every_format_comes_back_video_first(server):
    import base64

    body = video_request(motion_file("*v3*.safetensors"), formats=["PNG", "WEBM", "MP4", "GIF"], frames=4)
    items = [base64.b64decode(item) for item in timed_post(server, "/sdapi/v1/img2img", body).json()["images"]]
    print(f"{len(items)} items: {[item[:12] for item in items[:4]]}")
    assert len(items) == 3 + 4  # GIF, MP4, WEBM, then the 4 frames
    assert items[0][:6] == b"GIF89a" and items[1][4:8] == b"ftyp" and items[2][:4] == bytes.fromhex("1a45dfa3")
    assert all(item[:8] == b"\x89PNG\r\n\x1a\n" for item in items[3:])
    written = sorted((Path(NEW_FORGE) / "outputs" / "img2img-images" / "i2v-adapter").iterdir())
    newest = max((path for path in written if path.is_dir()), key=lambda path: path.stat().st_mtime)
    frames = sorted(newest.glob("*.png"))
    assert len(frames) == 4 and "I2V-Adapter frames: 4" in Image.open(frames[0]).info["parameters"]


def test_a_batch_count_of_two_makes_two_videos(server, reference_frame_zero):
    import webui_server

    body = {**video_request(motion_file("*v3*.safetensors"), frames=4, formats=["GIF"]), "n_iter": 2}
    items = [webui_server.decode_image(item) for item in server.post("/sdapi/v1/img2img", body).json()["images"]]
    print(f"batch count 2: {[image.format for image in items]}")
    assert [image.format for image in items[:2]] == ["GIF", "GIF"] and len(items) == 2 + 2 * 4
    assert all(image.n_frames == 4 for image in items[:2])
    for first in (items[2], items[6]):
        check_frame_zero("batch count 2", np.asarray(first.convert("RGB")), reference_frame_zero)


def test_txt2img_with_the_panel_image(server, reference_frame_zero):
    frames = video_frames(timed_post(server, "/sdapi/v1/txt2img",
                                     video_request(motion_file("*v3*.safetensors"), img2img=False)))
    assert len(frames) == FRAMES
    check_frame_zero("txt2img, v3", frames[0], reference_frame_zero)
    assert max(int(np.abs(f.astype(int) - frames[0].astype(int)).max()) for f in frames[1:]) > 10


def test_v1_motion_module_with_group_norm_over_frames(server, reference_frame_zero):
    frames = video_frames(timed_post(server, "/sdapi/v1/img2img", video_request(motion_file("*v1*.ckpt"))))
    assert len(frames) == FRAMES
    check_frame_zero("img2img, v1", frames[0], reference_frame_zero)


def test_the_motion_module_inside_an_ipplus_file(server, reference_frame_zero):
    # A whole 3D UNet as animatediff_v15_v1_ipplus.pth: spatial UNet, IP-Adapter K/V, adapter and v1 motion tensors.
    import torch

    folder = Path(NEW_FORGE) / "models" / "AnimateDiff"
    ipplus, v1 = first_file(folder, "*ipplus*.pth"), first_file(folder, "*v1*.ckpt")
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", video_request(ipplus.name)))
    assert len(video) == FRAMES
    check_frame_zero("ipplus motion module", video[0], reference_frame_zero)
    assert max(level_difference(frame, video[0]) for frame in video[1:]) > 10
    whole, alone = (torch.load(path, map_location="cpu", weights_only=True, mmap=True) for path in (ipplus, v1))
    if all(key in whole and torch.equal(whole[key], tensor) for key, tensor in alone.items()):
        # The same motion weights as the v1 file: the same video, bit for bit.
        same = video_frames(server.post("/sdapi/v1/img2img", video_request(v1.name)))
        print(f"ipplus vs the v1 file with its motion weights: {max(map(level_difference, video, same))} levels")
        assert all(np.array_equal(a, b) for a, b in zip(video, same))


def test_xyz_plot_over_the_adapter_scale(server):
    import webui_server

    body = video_request(motion_file("*v3*.safetensors"), frames=4, formats=["GIF"])
    body = as_xyz_plot(server, body, "[I2V-Adapter] scale", "0.2, 1")
    folder = Path(NEW_FORGE) / "outputs" / "img2img-images" / "i2v-adapter"
    before = set(folder.glob("*.gif"))
    response = timed_post(server, "/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    infotexts = json.loads(response.json()["info"])["infotexts"]
    scales = [re.search(r"I2V-Adapter scale: ([\d.]+)", text)[1] for text in infotexts[1:]]
    print(f"X/Y/Z cells' scales: {scales}")
    assert [float(scale) for scale in scales] == [0.2, 1.0]
    # The grid and one picture per cell; each cell also wrote its own video.
    images = [webui_server.decode_image(item) for item in response.json()["images"]]
    print(f"X/Y/Z: {len(images)} images {[image.size for image in images]}")
    assert images[0].size[0] > images[1].size[0] and len(images) == 3
    gifs = sorted(set(folder.glob("*.gif")) - before)
    cells = [[np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(Image.open(gif))] for gif in gifs]
    print(f"X/Y/Z videos {[gif.name for gif in gifs]}: frame 1 differs by "
          f"{level_difference(cells[0][1], cells[1][1])} levels")
    assert len(cells) == 2 and len(cells[0]) == 4
    assert np.array_equal(cells[0][0], cells[1][0]) and level_difference(cells[0][1], cells[1][1]) > 10


def test_xyz_plot_with_a_refused_cell_shows_the_sentence_there(server):
    import webui_server

    body = video_request(motion_file("*v3*.safetensors"), frames=4, formats=["GIF"])
    body = as_xyz_plot(server, body, "[I2V-Adapter] scale", "1, 5")
    response = timed_post(server, "/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    infotexts = json.loads(response.json()["info"])["infotexts"]
    images = [webui_server.decode_image(item) for item in response.json()["images"]]
    print(f"X/Y/Z with scale 5: {len(images)} images, cell infotexts {[text[:70] for text in infotexts[1:]]}")
    assert "I2V-Adapter scale: 1" in infotexts[1] and "scale must be between 0.0 and 2.0, got 5" in infotexts[2]
    refused = np.asarray(images[2].convert("RGB")).astype(int)
    assert images[2].size == (SIZE, SIZE) and (refused[..., 0] - refused[..., 1] > 50).any()  # the sentence in red


def test_a_long_video_is_anchored_in_every_window(server, reference_frame_zero):
    body = video_request(motion_file("*v2*.safetensors"), frames=32, context_length=16, context_overlap=4)
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", body))
    check_long_video(server, video, 32, reference_frame_zero)


@pytest.mark.parametrize("settings, expected", [
    ({"motion_module": "missing_module.safetensors"}, "no motion module named 'missing_module.safetensors'"),
    ({"motion_module": CORRUPT_FILE}, CORRUPT_FILE),
    ({"frames": 1}, "frames must be between 2 and 64"),
    ({"context_length": 40}, "context_length must be between"),
    ({"context_length": 8, "context_overlap": 8, "frames": 16}, "overlap (8) must be less"),
    ({"formats": ["AVI"]}, "unknown format(s) AVI"),
    ({"bogus_key": 1}, "unknown parameter(s) bogus_key; known: enable,"),
])
def test_bad_requests_are_refused_with_one_sentence(server, settings, expected):
    corrupt = Path(NEW_FORGE) / "models" / "AnimateDiff" / CORRUPT_FILE
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken!}" + bytes(64))
    try:
        settings = {"motion_module": motion_file("*v2*.safetensors"), **settings}
        response = server.post("/sdapi/v1/img2img", video_request(**settings))
    finally:
        corrupt.unlink()
    print(f"{settings}: HTTP {response.status_code} {response.text[:300]}")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert expected in detail and "\n" not in detail and NEW_FORGE not in detail


@pytest.fixture(scope="module")
def pose_model(server):
    models = server.get("/controlnet/model_list").json()["model_list"]
    pose = next((model for model in models if "openpose" in model.lower()), None)
    if pose is None:
        pytest.skip(f"needs an SD1.5 OpenPose ControlNet in models/ControlNet, found {models}")
    return pose


def test_one_control_picture_steers_every_frame(server, pose_model, reference_frame_zero):
    import webui_server

    pose = np.zeros((SIZE, SIZE, 3), np.uint8)
    pose[8:56, 24:40] = 255
    body = video_request(motion_file("*v2*.safetensors"))
    plain = video_frames(server.post("/sdapi/v1/img2img", body))
    unit = {"enabled": True, "module": "None", "model": pose_model,
            "image": webui_server.encode_png(Image.fromarray(pose))}
    controlled = video_frames(timed_post(server, "/sdapi/v1/img2img",
                                         {**body, "alwayson_scripts": {**body["alwayson_scripts"],
                                                                       "ControlNet": {"args": [unit]}}}))
    changes = [level_difference(a, b) for a, b in zip(controlled, plain)]
    print(f"ControlNet, one picture: frame differences to the plain video {changes}")
    assert len(controlled) == FRAMES
    check_frame_zero("ControlNet, one picture", controlled[0], reference_frame_zero)
    assert min(changes[1:]) > 10


def test_a_control_folder_lines_up_with_the_frames_of_each_window(server, pose_model, reference_frame_zero, tmp_path):
    from webui_requests import write_pose_folder

    folder = write_pose_folder(tmp_path, 16)
    body = video_request(motion_file("*v2*.safetensors"), frames=16, context_length=8, context_overlap=2)
    unit = {"enabled": True, "module": "none", "model": pose_model, "batch_images": str(folder)}
    body["alwayson_scripts"]["ControlNet"] = {"args": [unit]}
    response = timed_post(server, "/sdapi/v1/img2img", body)
    check_long_video(server, video_frames(response), 16, reference_frame_zero)
    info = json.loads(response.json()["info"])["infotexts"][0]
    print(f"ControlNet folder: {info[info.find('ControlNet 0'):][:160]}")
    assert "ControlNet 0" in info


def test_image_as_ip_adapter_content(server, reference_frame_zero):
    # Forge's IP-Adapter preprocessor reads models/ControlNetPreprocessor/CLIP-ViT-H-14.safetensors.
    models = server.get("/controlnet/model_list").json()["model_list"]
    ip_adapter = next((m for m in models if "ip-adapter" in m.lower() and "xl" not in m.lower()), None)
    encoder = Path(NEW_FORGE) / "models" / "ControlNetPreprocessor" / "CLIP-ViT-H-14.safetensors"
    if ip_adapter is None or not encoder.exists():
        pytest.skip(f"needs an SD1.5 IP-Adapter model in models/ControlNet and {encoder.name}, found {models}")
    module = motion_file("*v2*.safetensors")
    plain = video_frames(server.post("/sdapi/v1/img2img", video_request(module)))
    response = timed_post(server, "/sdapi/v1/img2img", video_request(module, ip_adapter=True, ip_adapter_weight=0.8))
    frames = video_frames(response)
    info = json.loads(response.json()["info"])["infotexts"][0]
    changes = [level_difference(a, b) for a, b in zip(frames, plain)]
    print(f"IP-Adapter: frame differences to the video without it {changes}; {info[info.find('ControlNet 0'):][:200]}")
    assert len(frames) == FRAMES
    check_frame_zero("IP-Adapter", frames[0], reference_frame_zero)
    assert ip_adapter.split(" [")[0] in info and "CLIP-ViT-H (IPAdapter)" in info and "Weight: 0.8" in info
    assert "I2V-Adapter IP-Adapter: True" in info
    assert min(changes[1:]) > 10


def test_an_exception_inside_sampling_fails_the_request_only(server):
    import webui_fault

    with leaves_the_webui_as_before(server, txt2img(), "an exception inside sampling"):
        summaries = server.log_text().count("attn1 calls with frame 0")
        body = {**video_request(motion_file("*v2*.safetensors")), "prompt": f"a cat, {webui_fault.MARKER}"}
        response = server.post("/sdapi/v1/img2img", body)
        print(f"exception inside sampling: HTTP {response.status_code}")
        assert response.status_code == 500 and "fault injected" in response.text
        assert server.log_text().count("attn1 calls with frame 0") == summaries + 1  # our cleanup ran once


def test_reload_ui_then_a_video(server, reference_frame_zero):
    with leaves_the_webui_as_before(server, txt2img(), "Reload UI and a video"):
        server.reload_ui()
        frames = video_frames(server.post("/sdapi/v1/img2img", video_request(motion_file("*v3*.safetensors"))))
    check_frame_zero("after Reload UI", frames[0], reference_frame_zero)


def test_videos_and_refusals_leave_the_webui_as_before(server):
    # After a video and a refusal the noise schedule is Forge's again; the extension off is the extension absent.
    with leaves_the_webui_as_before(server, txt2img(), "a video and a refused request"):
        module = motion_file("*v3*.safetensors")
        video_frames(server.post("/sdapi/v1/img2img", video_request(module)))
        assert server.post("/sdapi/v1/img2img", video_request(module, frames=1)).status_code == 422
    plain, off = (pictures(server.post("/sdapi/v1/txt2img", body)) for body in (txt2img(), txt2img({"enable": False})))
    assert len(plain) == len(off) and all(np.array_equal(a, b) for a, b in zip(plain, off))
