"""End to end in a real A1111 WebUI with sd-webui-animatediff, through the HTTP API.

Runs only when I2V_WEBUI_DIR points at a WebUI checkout that has sd-webui-animatediff with a motion
module and an SD1.5 checkpoint (random weights are fine). Optional: I2V_WEBUI_PYTHON (the WebUI's
Python), I2V_WEBUI_PORT (default 7861), I2V_WEBUI_ARGS (extra launch flags).
"""
import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2v_adapter.params import I2VParams
from webui_requests import (ADAPTER_FILE, FRAMES, as_xyz_plot, check_animatediff_off_is_refused, check_frame_zero,
                            check_long_video, check_video_starts_with_the_image, decoded_first_frame, first_file,
                            leaves_the_webui_as_before, level_difference, payload, sd15_motion_module, test_image,
                            video_frames, write_test_adapter)

WEBUI = os.environ.get("I2V_WEBUI_DIR")
pytestmark = pytest.mark.skipif(not WEBUI, reason="I2V_WEBUI_DIR is not set")

@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    import webui_fault
    import webui_server

    root = Path(WEBUI)
    webui_fault.install(root)
    models = write_test_adapter(root)
    (models / "broken.pth").write_bytes(b"not a weights file at all")
    with webui_server.running(root, "I2V_WEBUI", 7861, tmp_path_factory.mktemp("webui") / "webui.log") as server:
        yield server
        webui_fault.remove(root)


@pytest.fixture(scope="module")
def checkpoint():
    return first_file(Path(WEBUI) / "models" / "Stable-diffusion", "*.safetensors")


@pytest.fixture(scope="module")
def motion_module():
    return sd15_motion_module(Path(WEBUI) / "extensions" / "sd-webui-animatediff" / "model")


@pytest.fixture(scope="module")
def image():
    return test_image()


@pytest.fixture(scope="module")
def reference_frame_zero(checkpoint, image):
    return decoded_first_frame(checkpoint, image)


def test_img2img_video_starts_with_the_image(webui, motion_module, image, reference_frame_zero):
    import webui_server

    encoded = webui_server.encode_png(image)
    i2v = {"enable": True, "model": ADAPTER_FILE, "t0": 1.0, "p": 0.5}
    runs = [webui.post("/sdapi/v1/img2img", payload(motion_module, seed=seed, i2v=i2v, init_images=[encoded],
                                                     denoising_strength=0.5)) for seed in (1, 2)]
    first, second = (video_frames(run) for run in runs)
    check_video_starts_with_the_image(first, second, reference_frame_zero)
    info = json.loads(runs[0].json()["info"])["infotexts"][0]
    assert f"I2V-Adapter model: {ADAPTER_FILE}" in info and "I2V-Adapter hash: " in info
    assert "Denoising strength: 1" in info  # t0 replaced the request's 0.5
    assert_infotext_round_trips(webui, info, I2VParams(enable=True, model=ADAPTER_FILE, t0=1.0, p=0.5))


def assert_infotext_round_trips(webui, infotext: str, expected):
    """The WebUI's own PNG-info parser hands our entries back unchanged."""
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", infotext)
    png = Image.new("RGB", (8, 8))
    buffer = io.BytesIO()
    png.save(buffer, "PNG", pnginfo=text)
    response = webui.post("/sdapi/v1/png-info", {"image": base64.b64encode(buffer.getvalue()).decode()})
    assert response.status_code == 200, response.text[:300]
    parsed = response.json()["parameters"]
    assert I2VParams.from_infotext(parsed) == expected


def test_txt2img_with_the_panel_image(webui, motion_module, image, reference_frame_zero):
    import webui_server

    i2v = {"enable": True, "image": webui_server.encode_png(image), "model": ""}
    frames = video_frames(webui.post("/sdapi/v1/txt2img", payload(motion_module, i2v=i2v)))
    assert len(frames) == FRAMES
    check_frame_zero("txt2img", frames[0], reference_frame_zero)


@pytest.mark.parametrize("frames,context", [(32, 16), (64, 16)])
def test_long_video_with_context_windows(webui, motion_module, image, reference_frame_zero, frames, context):
    import webui_server

    i2v = {"enable": True, "model": ADAPTER_FILE}
    response = webui.post("/sdapi/v1/img2img", payload(motion_module, frames=frames, context=context, i2v=i2v,
                                                       init_images=[webui_server.encode_png(image)]))
    check_long_video(webui, video_frames(response), frames, reference_frame_zero)


@pytest.mark.parametrize("i2v,extra,message", [
    ({"enable": True}, {}, "I2V-Adapter needs an image"),
    ({"enable": True, "image": "IMAGE", "strength": 2}, {}, "unknown parameter(s) strength"),
    ({"enable": True, "image": "IMAGE", "model": "broken.pth"}, {}, "broken.pth"),
    ({"enable": True, "image": "IMAGE", "model": "missing.pth"}, {}, "no weights file named 'missing.pth'"),
    ({"enable": True, "image": "IMAGE"}, {"enable_hr": True}, "Hires. fix"),
    ({"enable": True, "image": "IMAGE", "color_match": [1, 2]}, {}, "color_match must be true or false"),
    ({"enable": True, "image": 12345}, {}, "image must be"),
])
def test_bad_input_gets_one_sentence(webui, motion_module, image, i2v, extra, message):
    import webui_server

    i2v = {k: (webui_server.encode_png(image) if v == "IMAGE" else v) for k, v in i2v.items()}
    response = webui.post("/sdapi/v1/txt2img", payload(motion_module, i2v=i2v, **extra))
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert message in detail
    assert f"{os.sep}broken.pth" not in detail  # files are named as the user picked them, not by server path


def test_animatediff_off_is_refused(webui, motion_module, image):
    check_animatediff_off_is_refused(webui, motion_module, image)


def img2img_frames(webui, motion_module, image, **extra) -> list[np.ndarray]:
    import webui_server

    i2v = {"enable": True, "model": ADAPTER_FILE, **extra.pop("i2v", {})}
    response = webui.post("/sdapi/v1/img2img", payload(motion_module, i2v=i2v, init_images=[webui_server.encode_png(image)],
                                                       **extra))
    return video_frames(response)


@pytest.mark.parametrize("sampler", ["DDIM", "DPM++ 2M", "LCM"])
def test_samplers_keep_frame_zero(webui, motion_module, image, reference_frame_zero, sampler):
    frames = img2img_frames(webui, motion_module, image, sampler_name=sampler, steps=3)
    assert len(frames) == FRAMES
    check_frame_zero(sampler, frames[0], reference_frame_zero)
    assert level_difference(frames[1], reference_frame_zero) > 10


@pytest.mark.parametrize("case,extra", [
    ("batch_cond_uncond off", {"override_settings": {"batch_cond_uncond": False}}),
    # sd-webui-animatediff skips the uncond half only with batch_cond_uncond off (on, its windows index rows
    # that are not there): the case names both settings instead of relying on an earlier case's leftover.
    ("uncond skipped", {"s_min_uncond": 100.0,
                        "override_settings": {"s_min_uncond_all": True, "batch_cond_uncond": False}}),
    ("prompt travel", {"prompt": "a cat\n0: sitting\n4: running, fast"}),
    ("FreeInit", {"animatediff_options": {"freeinit_enable": True, "freeinit_iters": 2}}),
])
def test_generation_options_keep_frame_zero(webui, motion_module, image, reference_frame_zero, case, extra):
    frames = img2img_frames(webui, motion_module, image, **extra)
    options = webui.get("/sdapi/v1/options").json()
    # A1111 1.10.1 keeps these when its config file has no entry for them: later checks must not depend on it.
    kept = {name: options[name] for name in extra.get("override_settings", {})}
    print(f"{case}: settings after the request {kept}")
    assert len(frames) == FRAMES
    check_frame_zero(case, frames[0], reference_frame_zero)


def test_color_match_keeps_every_frame_inside_frame_zeros_colours(webui, motion_module, image):
    import cv2

    ranges = {}
    for color_match in (False, True):
        frames = img2img_frames(webui, motion_module, image, i2v={"color_match": color_match})
        lab = [cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(int) for frame in frames]
        for channel, name in ((1, "a"), (2, "b")):
            low, high = lab[0][..., channel].min(), lab[0][..., channel].max()
            beyond = [np.maximum(low - frame[..., channel], frame[..., channel] - high) for frame in lab[1:]]
            ranges[color_match, name] = max(int(b.max()) for b in beyond)
            print(f"colour match {color_match}, Lab {name}: frame 0 {low}..{high}; pixels beyond it "
                  f"{sum(int((b > 2).sum()) for b in beyond)}, at most {ranges[color_match, name]} levels")
    assert ranges[True, "a"] <= 2 and ranges[True, "b"] <= 2


def test_batch_count_two_makes_two_videos_from_the_image(webui, motion_module, image, reference_frame_zero):
    import webui_server

    body = payload(motion_module, i2v={"enable": True, "model": ADAPTER_FILE}, n_iter=2,
                   init_images=[webui_server.encode_png(image)])
    response = webui.post("/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    videos = [webui_server.decode_image(item) for item in response.json()["images"][:2]]
    assert [video.format for video in videos] == ["GIF", "GIF"]
    first, second = ([np.asarray(frame_of(video, index)) for index in range(2)] for video in videos)
    for video in videos:
        assert video.n_frames == FRAMES
    # Both videos start from the image; their other frames come from different seeds.
    print(f"batch count 2: frame 0 video 1 vs video 2 {level_difference(first[0], second[0])} levels, "
          f"frame 1 {level_difference(first[1], second[1])} levels")
    assert level_difference(first[0], second[0]) <= 2
    assert level_difference(first[1], second[1]) > 10


def frame_of(video, index: int):
    video.seek(index)
    return video.convert("RGB")

def test_xyz_plot_axes(webui, motion_module, image, reference_frame_zero):
    import webui_server

    body = payload(motion_module, i2v={"enable": True, "model": ""}, init_images=[webui_server.encode_png(image)])
    body = as_xyz_plot(webui, body, "[I2V-Adapter] p", "0.2, 0.9")
    response = webui.post("/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    infotexts = json.loads(response.json()["info"])["infotexts"]
    assert [text for text in infotexts[1:] if "I2V-Adapter p: 0.2" in text]
    assert [text for text in infotexts[1:] if "I2V-Adapter p: 0.9" in text]
    cells = [np.asarray(webui_server.decode_image(item).convert("RGB")) for item in response.json()["images"][1:3]]
    assert level_difference(cells[0], reference_frame_zero) <= 2 and level_difference(cells[1], reference_frame_zero) <= 2


def test_xyz_plot_with_a_refused_cell_shows_the_sentence_there(webui, motion_module, image, reference_frame_zero):
    import webui_server

    body = payload(motion_module, i2v={"enable": True, "model": ""}, init_images=[webui_server.encode_png(image)])
    body = as_xyz_plot(webui, body, "[I2V-Adapter] scale", "1, 5")
    response = webui.post("/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:300]
    infotexts = json.loads(response.json()["info"])["infotexts"]
    print(f"X/Y/Z with scale 5: cell infotexts {[text[:70] for text in infotexts[1:]]}")
    assert any("scale must be between 0.0 and 2.0, got 5" in text for text in infotexts[1:])
    cells = [np.asarray(webui_server.decode_image(item).convert("RGB")) for item in response.json()["images"][1:3]]
    assert level_difference(cells[0], reference_frame_zero) <= 2  # the good cell: frame 0 is the picture
    refused = cells[1].astype(int)
    assert (refused[..., 0] - refused[..., 1] > 50).any()  # the refused cell: its sentence in red


def plain(motion_module) -> dict:
    """AnimateDiff txt2img without this extension: what the "as before" checks repeat around an action."""
    return payload(motion_module)


def test_interrupt_cleans_up(webui, motion_module, image):
    import webui_server

    body = payload(motion_module, steps=40, i2v={"enable": True, "model": ADAPTER_FILE},
                   init_images=[webui_server.encode_png(image)])
    with leaves_the_webui_as_before(webui, plain(motion_module), "an interrupted I2V run"):
        summaries = webui.log_text().count("attn1 calls with frame 0")
        result = {}
        worker = threading.Thread(target=lambda: result.update(response=webui.post("/sdapi/v1/img2img", body)))
        worker.start()
        deadline = time.time() + 600
        while time.time() < deadline and webui.get("/sdapi/v1/progress").json()["state"]["sampling_step"] < 1:
            time.sleep(0.5)
        webui.post("/sdapi/v1/interrupt", {})
        worker.join(900)
        assert result["response"].status_code == 200
        assert webui.log_text().count("attn1 calls with frame 0") == summaries + 1  # our cleanup ran once


def test_exception_inside_sampling_cleans_up(webui, motion_module, image):
    import webui_fault
    import webui_server

    body = payload(motion_module, prompt=f"a cat, {webui_fault.MARKER}", i2v={"enable": True, "model": ADAPTER_FILE},
                   init_images=[webui_server.encode_png(image)])
    with leaves_the_webui_as_before(webui, plain(motion_module), "an exception inside sampling"):
        response = webui.post("/sdapi/v1/img2img", body)
        assert response.status_code == 500
        assert "fault injected" in response.text


def test_reload_ui_then_generate(webui, motion_module, image, reference_frame_zero):
    with leaves_the_webui_as_before(webui, plain(motion_module), "Reload UI and an I2V run"):
        webui.reload_ui()
        frames = img2img_frames(webui, motion_module, image)
    check_frame_zero("after Reload UI", frames[0], reference_frame_zero)


def test_i2v_runs_and_refused_requests_leave_the_webui_as_before(webui, motion_module, image):
    import webui_server

    with leaves_the_webui_as_before(webui, plain(motion_module), "I2V runs and refused requests"):
        img2img_frames(webui, motion_module, image, i2v={"color_match": True})
        i2v = {"enable": True, "image": webui_server.encode_png(image), "model": ""}
        video_frames(webui.post("/sdapi/v1/txt2img", payload(motion_module, i2v=i2v)))
        refused = webui.post("/sdapi/v1/txt2img", payload(motion_module, i2v={**i2v, "model": "missing.pth"}))
        assert refused.status_code == 422
        check_animatediff_off_is_refused(webui, motion_module, image)


# -- sd-webui-animatediff's own motion controls with I2V-Adapter on: prompt travel, closed loop, motion LoRA ---

def test_animatediff_prompt_travel_alongside(webui, motion_module, image, reference_frame_zero):
    from webui_requests import check_prompt_travel_alongside

    check_prompt_travel_alongside(webui, motion_module, image, reference_frame_zero)


def test_animatediff_closed_loop_alongside(webui, motion_module, image, reference_frame_zero):
    from webui_requests import check_closed_loop_alongside

    check_closed_loop_alongside(webui, motion_module, image, reference_frame_zero)


def test_animatediff_motion_lora_alongside(webui, image, reference_frame_zero):
    from webui_requests import check_motion_lora_alongside

    loras = sorted(Path(WEBUI).joinpath("models", "Lora").glob("v2_lora_ZoomIn*"))
    if not loras:
        pytest.skip("needs a motion LoRA v2_lora_ZoomIn* in models/Lora that sd-webui-animatediff reads")
    v2 = first_file(Path(WEBUI) / "extensions" / "sd-webui-animatediff" / "model", "*v2*")
    check_motion_lora_alongside(webui, v2.name, image, reference_frame_zero, loras[0].stem)


# -- the cases every WebUI with sd-webui-animatediff shares ------------------------------------------------------

@pytest.fixture(scope="module")
def server(webui):
    return webui


@pytest.fixture(scope="module")
def outputs():
    return Path(WEBUI) / "outputs"


from animatediff_host_cases import *  # noqa: E402,F401,F403  (keyframes, loops, one video per picture)
