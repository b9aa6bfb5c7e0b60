"""Keyframes end to end in a real Forge 2: a video from picture A to picture B, and loops.

Needs what tests/test_webui_new_forge.py needs (an SD1.5 checkpoint and a v2/v3 motion module).
"""
import base64

import numpy as np
import pytest
from PIL import Image
from test_webui_new_forge import NEW_FORGE, first_file, motion_file, server, timed_post, video_request  # noqa: F401
from webui_requests import (check_frame_zero, decoded_first_frame, last_keyframe_summary, last_summary,
                            last_test_image, leaves_the_webui_as_before, level_difference, test_image,
                            video_frames)

pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")


@pytest.fixture(scope="module")
def references():
    from pathlib import Path

    checkpoint = first_file(Path(NEW_FORGE) / "models" / "Stable-diffusion", "*.safetensors")
    return decoded_first_frame(checkpoint, test_image()), decoded_first_frame(checkpoint, last_test_image())


def a_to_b(frames=12, seed=1, **settings) -> dict:
    import webui_server

    return video_request(motion_file("*v3*.safetensors"), frames=frames, seed=seed,
                         last_image=webui_server.encode_png(last_test_image()), **settings)


def plain():
    from test_webui_new_forge import txt2img

    return txt2img()


def test_a_video_from_a_to_b_starts_on_a_and_ends_exactly_on_b(server, references):
    first_reference, last_reference = references
    with leaves_the_webui_as_before(server, plain(), "a video from A to B"):
        first = video_frames(timed_post(server, "/sdapi/v1/img2img", a_to_b(seed=1)))
        second = video_frames(timed_post(server, "/sdapi/v1/img2img", a_to_b(seed=2)))
    assert len(first) == len(second) == 12
    check_frame_zero("A -> B, frame 0", first[0], first_reference)
    ends = level_difference(first[-1], last_reference)
    print(f"A -> B: frame 11 vs decode(z_B) {ends} levels; seeds 1/2: frame 0 {level_difference(first[0], second[0])}, "
          f"frame 11 {level_difference(first[-1], second[-1])}, frame 5 {level_difference(first[5], second[5])}; "
          f"last keyframe: {last_keyframe_summary(server)}")
    assert ends <= 2
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[-1], second[-1])
    assert level_difference(first[5], second[5]) > 10  # the frames between come from the seed
    assert last_keyframe_summary(server)["missing"] == 0 and last_summary(server)["unreferenced"] == 0


def test_a_loop_ends_on_frame_zero_and_its_files_hold_each_frame_once(server):
    import webui_server

    body = video_request(motion_file("*v3*.safetensors"), frames=8, loop=True, formats=["GIF", "WEBP", "PNG"])
    response = timed_post(server, "/sdapi/v1/img2img", body)
    items = response.json()["images"]
    gif, webp = (webui_server.decode_image(item) for item in items[:2])
    frames = [np.asarray(webui_server.decode_image(item).convert("RGB")) for item in items[2:]]
    print(f"loop: GIF {gif.n_frames} frames, WEBP {webp.n_frames}, PNG {len(frames)}; last vs first "
          f"{level_difference(frames[-1], frames[0])} levels; {response.json()['info'][-120:]}")
    assert gif.n_frames == webp.n_frames == 7 and len(frames) == 8
    assert np.array_equal(frames[-1], frames[0])
    assert "I2V-Adapter loop: True" in response.json()["info"]


def test_24_frames_from_a_to_b_in_windows_of_8_hold_both_anchors(server, references):
    first_reference, last_reference = references
    body = a_to_b(frames=24, context_length=8, context_overlap=2)
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", body))
    first, last = last_summary(server), last_keyframe_summary(server)
    print(f"24 frames, windows of 8: frame 0 {level_difference(video[0], first_reference)} levels, frame 23 "
          f"{level_difference(video[-1], last_reference)}; frame 0: {first}; last frame: {last}")
    assert len(video) == 24
    assert level_difference(video[0], first_reference) <= 2 and level_difference(video[-1], last_reference) <= 2
    assert first["unreferenced"] == first["untouched"] == 0 and first["banked"] > 0
    # Every window of every step attends to both: at the first step a priming run of the last frame's window
    # (its result dropped) stores B's keys/values for frame 0's window; later steps read the step before.
    assert last["missing"] == 0 and last["banked"] > 0 and last["previous step"] > 0 and last["priming"] > 0


@pytest.mark.parametrize("settings, expected", [
    ({"loop": True, "last_image": "LAST"}, "loop ends the video on the first picture"),
    ({"last_image": "LAST", "frames": 2}, "needs at least 3 frames, got 2"),
    ({"last_image": base64.b64encode(b"not a picture").decode()}, "the last frame (last_image) is not a readable"),
], ids=["loop-and-last", "two-frames", "unreadable"])
def test_bad_keyframe_requests_are_refused_with_one_sentence(server, settings, expected):
    import webui_server

    settings = {key: webui_server.encode_png(last_test_image()) if value == "LAST" else value
                for key, value in settings.items()}
    body = video_request(motion_file("*v3*.safetensors"), **settings)
    with leaves_the_webui_as_before(server, plain(), f"a refused keyframe request ({list(settings)})"):
        response = server.post("/sdapi/v1/img2img", body)
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert expected in detail and "\n" not in detail
