"""What the real-WebUI tests (A1111 and Forge) send and compare: payloads, the test image, files they need."""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FRAMES = 8
SIZE = 64
ADAPTER_FILE = "i2v_test_random.pth"


def first_file(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        pytest.skip(f"nothing matching {pattern} in {folder}")
    return found[0]


def sd15_motion_module(folder: Path) -> str:
    """The first SD1.5 motion module (safetensors) in ``folder``; a shared WebUI may hold SDXL ones too, which
    have motion modules on three down blocks, not four."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as tensors:
            if any(key.startswith("down_blocks.3.") for key in tensors.keys()):
                return path.name
    pytest.skip(f"no SD1.5 motion module (safetensors) in {folder}")


def write_test_adapter(webui: Path) -> Path:
    """Random adapter weights of the official layout, where the WebUI looks for them."""
    import weight_fixtures

    models = webui / "models" / "I2V-Adapter"
    models.mkdir(parents=True, exist_ok=True)
    torch.save(weight_fixtures.official_state_dict(dtype=torch.float16, seed=3), models / ADAPTER_FILE)
    return models


def test_image() -> Image.Image:
    x, y = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    pixels = np.stack([x * 4, y * 4, 255 - (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    pixels[20:44, 20:44] = (250, 200, 40)
    return Image.fromarray(pixels)


test_image.__test__ = False  # a helper, not a test


def last_test_image() -> Image.Image:
    """Picture B of a video from A to B: other colours and the square elsewhere."""
    pixels = 255 - np.asarray(test_image())[::-1].copy()
    pixels[8:24, 36:60] = (30, 220, 90)
    return Image.fromarray(pixels)


def decoded_first_frame(checkpoint: Path, image: Image.Image) -> np.ndarray:
    """decode(z0) with a VAE built outside the WebUI: what frame 0 must look like."""
    from vae_reference import ReferenceVAE

    vae = ReferenceVAE(str(checkpoint))
    return vae.decode_uint8(vae.encode_mean(image))


def animatediff(model, frames=FRAMES, context=None, enable=True, **options):
    return {"model": model, "enable": enable, "video_length": frames, "batch_size": context or frames,
            "fps": 8, "closed_loop": "R-P", "format": ["GIF", "Frame"], **options}


def payload(model, seed=1, frames=FRAMES, context=None, i2v=None, animatediff_options=None, **extra):
    scripts = {"AnimateDiff": {"args": [animatediff(model, frames, context, **(animatediff_options or {}))]}}
    if i2v is not None:
        scripts["I2V-Adapter"] = {"args": [i2v]}
    body = dict(prompt="a cat", negative_prompt="", steps=2, width=SIZE, height=SIZE, cfg_scale=7,
                sampler_name="Euler", seed=seed, alwayson_scripts=scripts)
    body.update(extra)
    return body


def level_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


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


@contextmanager
def leaves_the_webui_as_before(server, plain: dict, action: str, path: str = "/sdapi/v1/txt2img"):
    """The request ``plain`` (without this extension) just before and just after the block gives bit-identical
    images. Both runs see the WebUI in the same state but for the block, so a difference can only come from
    it: a check against a run taken earlier would also catch whatever other requests changed in between."""
    before = all_images(server.post(path, plain))
    yield
    after = all_images(server.post(path, plain))
    assert len(after) == len(before)
    difference = max(level_difference(a, b) for a, b in zip(after, before))
    print(f"{action}: plain run after vs just before: {difference} levels over {len(after)} images")
    assert difference == 0, f"a plain run after {action} differs from the one just before by {difference} levels"


def video_frames(response) -> list[np.ndarray]:
    """The frames of an AnimateDiff video response: a GIF, one picture per frame, then any ControlNet maps."""
    import webui_server

    assert response.status_code == 200, response.text[:500]
    images = [webui_server.decode_image(item) for item in response.json()["images"]]
    assert images[0].format == "GIF", "AnimateDiff made no video (its setup failed: see the WebUI's log)"
    frames = images[1:1 + images[0].n_frames]
    assert len(frames) == images[0].n_frames
    return [np.asarray(image.convert("RGB")) for image in frames]


def check_frame_zero(label: str, frame: np.ndarray, reference: np.ndarray) -> int:
    """Frame 0 is decode(z0) within the rounding of a second decode; returns the level difference."""
    difference = level_difference(frame, reference)
    print(f"{label}: frame 0 vs decode(z0) {difference} levels")
    assert difference <= 2
    return difference


def check_video_starts_with_the_image(first: list, second: list, reference: np.ndarray) -> None:
    """Two videos of the same request with seeds 1 and 2: frame 0 is decode(z0) in both, frame 1 is not."""
    assert len(first) == len(second) == FRAMES
    print(f"img2img: frame 0 vs decode(z0) {level_difference(first[0], reference)} levels; "
          f"frame 1 seed 1 vs seed 2 {level_difference(first[1], second[1])}; "
          f"frame 1 vs decode(z0) {level_difference(first[1], reference)}")
    assert level_difference(first[0], reference) <= 2
    assert np.array_equal(first[0], second[0])  # frame 0 does not depend on the seed
    assert level_difference(first[1], second[1]) > 10  # the other frames do
    assert level_difference(first[1], reference) > 10


def check_long_video(server, video: list, frames: int, reference: np.ndarray) -> None:
    """A video longer than the motion module's window: all its frames, frame 0 the image, and every window
    attended to frame 0 (from the bank where frame 0 was not in the window)."""
    assert len(video) == frames
    check_frame_zero(f"{frames} frames", video[0], reference)
    summary = last_summary(server)
    print(f"attn1 calls: {summary}")
    assert summary["anchored"] > 0 and summary["banked"] > 0
    assert summary["unreferenced"] == summary["untouched"] == 0


def check_animatediff_off_is_refused(server, motion_module, image) -> None:
    """I2V on with AnimateDiff off: HTTP 422 and the sentence that says to enable AnimateDiff."""
    import webui_server

    body = payload(motion_module, i2v={"enable": True, "image": webui_server.encode_png(image)})
    body["alwayson_scripts"]["AnimateDiff"]["args"][0]["enable"] = False
    response = server.post("/sdapi/v1/txt2img", body)
    assert response.status_code == 422
    assert "enable AnimateDiff" in response.json()["detail"]


# -- ControlNet (sd-webui-controlnet on A1111, the built-in one on Forge: the same requests) -------------

def write_pose_folder(folder: Path, frames: int = 32) -> Path:
    """One control image per frame: a bar that moves to the right."""
    for frame in range(frames):
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
        pixels[8:56, frame + 8:frame + 16] = (255, 255, 255)
        Image.fromarray(pixels).save(folder / f"{frame:04d}.png")
    return folder


def controlnet_models(server) -> dict[str, str]:
    """The OpenPose ControlNet and the SD1.5 IP-Adapter model the server lists; skips without them."""
    response = server.get("/controlnet/model_list")
    if response.status_code != 200:
        pytest.skip("no ControlNet in this WebUI")
    models = response.json()["model_list"]
    pose = next((m for m in models if "openpose" in m.lower()), None)
    ip_adapter = next((m for m in models if "ip-adapter" in m.lower() and "xl" not in m.lower()), None)
    if pose is None or ip_adapter is None:
        pytest.skip(f"needs an OpenPose ControlNet and an SD1.5 IP-Adapter model, found {models}")
    return {"pose": pose, "ip_adapter": ip_adapter}


def with_units(body: dict, *units) -> dict:
    body["alwayson_scripts"]["ControlNet"] = {"args": list(units)}
    return body


def pose_unit(model: str, folder: Path) -> dict:
    # batch_images is sd-webui-controlnet's field; the extension maps it onto Forge's batch_image_dir.
    return {"enabled": True, "module": "none", "model": model, "batch_images": str(folder)}


def i2v_img2img(motion_module, image, frames=FRAMES, context=None, seed=1, **i2v) -> dict:
    import webui_server

    return payload(motion_module, seed=seed, frames=frames, context=context,
                   init_images=[webui_server.encode_png(image)], i2v={"enable": True, "model": ADAPTER_FILE, **i2v})


def plain_i2v_video(server, motion_module, image) -> tuple[list, dict]:
    """An I2V img2img without ControlNet and the attn1 summary it logged: what the ControlNet cases compare to."""
    frames = video_frames(server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image)))
    return frames, last_summary(server)


def last_keyframe_summary(server) -> dict:
    """The counts of the last generation's line on the last keyframe's keys/values (a video from A to B)."""
    line = re.findall(r"attn1 calls with the last frame: (\d+), from the bank: (\d+), from the step before: (\d+), "
                      r"without it: (\d+); priming calls: (\d+)", server.log_text())[-1]
    return dict(zip(("anchored", "banked", "previous step", "missing", "priming"), map(int, line)))


def last_summary(server) -> dict:
    """The counts of the last generation's cleanup line: attn1 calls by where frame 0's keys came from."""
    line = re.findall(r"attn1 calls with frame 0: (\d+), from the bank: (\d+), without reference: (\d+), "
                      r"untouched: (\d+)", server.log_text())[-1]
    return dict(zip(("anchored", "banked", "unreferenced", "untouched"), map(int, line)))


# -- sd-webui-animatediff's own motion controls, with I2V-Adapter on (A1111 and classic Forge) ------------

def check_prompt_travel_alongside(server, motion_module, image, reference: np.ndarray) -> None:
    """AnimateDiff's prompt travel with I2V: frame 0 stays the picture, the frames after the second keyframe
    change most against the same video with the first keyframe's prompt alone."""
    plain = video_frames(server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image)))
    travel = video_frames(server.post("/sdapi/v1/img2img", {**i2v_img2img(motion_module, image),
                                                             "prompt": "0: a cat\n4: a dog"}))
    means = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(travel, plain)]
    print(f"AnimateDiff prompt travel with I2V: mean change per frame {[round(m, 1) for m in means]}")
    check_frame_zero("prompt travel", travel[0], reference)
    assert np.mean(means[4:]) > np.mean(means[1:4])


def check_closed_loop_alongside(server, motion_module, image, reference: np.ndarray) -> None:
    """AnimateDiff's closed loop (R+P, wrapping windows) with I2V: every window anchored to frame 0."""
    body = i2v_img2img(motion_module, image, frames=16, context=8)
    body["alwayson_scripts"]["AnimateDiff"]["args"][0]["closed_loop"] = "R+P"
    check_long_video(server, video_frames(server.post("/sdapi/v1/img2img", body)), 16, reference)


def check_motion_lora_alongside(server, motion_module, image, reference: np.ndarray, lora: str,
                                tag: str = "lora") -> None:
    """AnimateDiff's motion LoRA in the prompt (``<lora:name:1>``, ``<lyco:...>`` on classic Forge) with I2V:
    frame 0 stays, the rest moves."""
    plain = video_frames(server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image)))
    body = {**i2v_img2img(motion_module, image), "prompt": f"a cat <{tag}:{lora}:1>"}
    moved = video_frames(server.post("/sdapi/v1/img2img", body))
    changes = [level_difference(a, b) for a, b in zip(moved, plain)]
    print(f"AnimateDiff motion LoRA {lora} with I2V: frame differences to the video without it {changes}")
    check_frame_zero("motion LoRA", moved[0], reference)
    assert min(changes[1:]) > 5


def as_xyz_plot(server, body: dict, axis: str, values: str, tab: str = "img2img") -> dict:
    """``body`` run as an X/Y/Z plot over the axis labelled ``axis`` (one X axis, no Y/Z), as the page sends it."""
    choices = server.dropdown_choices(f"script_{tab}_xyz_plot_x_type")
    return {**body, "script_name": "x/y/z plot",
            "script_args": [choices.index(axis), values, [], 0, "", [], 0, "", [], True, True, False, False,
                            0, 0, 0, 0, False]}


# -- keyframes: a video from picture A to picture B, loops (A1111 and classic Forge, with sd-webui-animatediff) --

def check_a_to_b(server, motion_module, image, references, frames=12) -> None:
    """A 12-frame video from A to B in one window: frame 0 is decode(z_A), the last frame decode(z_B), both the
    same for two seeds; the frames between are not; plain runs before and after are bit-identical."""
    import webui_server

    first_reference, last_reference = references
    last = webui_server.encode_png(last_test_image().resize(image.size))
    plain = {**payload(motion_module), "alwayson_scripts": {}}  # txt2img: A1111's img2img encode draws noise
    with leaves_the_webui_as_before(server, plain, "a video from A to B"):
        videos = [video_frames(server.post("/sdapi/v1/img2img", i2v_img2img(
            motion_module, image, frames=frames, seed=seed, last_image=last))) for seed in (1, 2)]
    first, second = videos
    print(f"A -> B: frame 0 vs decode(z_A) {level_difference(first[0], first_reference)} levels, frame {frames - 1} "
          f"vs decode(z_B) {level_difference(first[-1], last_reference)}; seeds 1/2: frame 0 "
          f"{level_difference(first[0], second[0])}, last {level_difference(first[-1], second[-1])}, middle "
          f"{level_difference(first[frames // 2], second[frames // 2])}; last keyframe {last_keyframe_summary(server)}")
    assert len(first) == len(second) == frames
    assert level_difference(first[0], first_reference) <= 2 and level_difference(first[-1], last_reference) <= 2
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[-1], second[-1])
    assert level_difference(first[frames // 2], second[frames // 2]) > 10
    assert last_keyframe_summary(server)["missing"] == 0


def check_loop(server, motion_module, image, frames=8) -> None:
    """A loop: AnimateDiff's GIF holds each frame once (N - 1), the infotext says loop."""
    import webui_server

    with leaves_the_webui_as_before(server, {**payload(motion_module), "alwayson_scripts": {}}, "a loop"):
        response = server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, frames=frames, loop=True))
    gif = webui_server.decode_image(response.json()["images"][0])
    print(f"loop: GIF of {gif.n_frames} frames for a {frames}-frame video; last keyframe {last_keyframe_summary(server)}")
    assert gif.n_frames == frames - 1
    assert "I2V-Adapter loop: True" in response.json()["info"]
    plain = server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, frames=frames))
    assert webui_server.decode_image(plain.json()["images"][0]).n_frames == frames  # the writer is itself again


def check_animatediffs_own_last_frame_gives_way(server, motion_module, image, references) -> None:
    """AnimateDiff's own last-frame picture set as well: the video still ends exactly on ours, and the infotext
    says AnimateDiff's was not used."""
    import webui_server

    _, last_reference = references
    body = i2v_img2img(motion_module, image, last_image=webui_server.encode_png(last_test_image().resize(image.size)))
    body["alwayson_scripts"]["AnimateDiff"]["args"][0]["last_frame"] = webui_server.encode_png(image.rotate(90))
    response = server.post("/sdapi/v1/img2img", body)
    video = video_frames(response)
    info = response.json()["info"]
    print(f"with AnimateDiff's last frame too: last frame vs decode(z_B) {level_difference(video[-1], last_reference)} "
          f"levels; infotext: {info[info.find('I2V-Adapter last frame'):][:90]}")
    assert level_difference(video[-1], last_reference) <= 2
    assert "I2V-Adapter last frame: picture (AnimateDiff's last frame not used)" in info


def check_windowed_a_to_b(server, motion_module, image, references, frames=24, context=8) -> None:
    """24 frames from A to B in AnimateDiff's windows of 8 (its closed loop R-P: a window wraps round and holds both
    ends, and runs first): both ends exact, every window of every step attends to both keyframes."""
    import webui_server

    first_reference, last_reference = references
    last = webui_server.encode_png(last_test_image().resize(image.size))
    video = video_frames(server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, frames=frames,
                                                                      context=context, last_image=last)))
    first, last_counts = last_summary(server), last_keyframe_summary(server)
    print(f"{frames} frames from A to B in windows of {context}: frame 0 {level_difference(video[0], first_reference)} "
          f"levels, last {level_difference(video[-1], last_reference)}; frame 0 {first}; last frame {last_counts}")
    assert len(video) == frames
    assert level_difference(video[0], first_reference) <= 2 and level_difference(video[-1], last_reference) <= 2
    assert first["unreferenced"] == 0 and first["banked"] > 0 and last_counts["banked"] > 0
    assert last_counts["missing"] == 0


def check_keyframe_refusals(server, motion_module, image) -> None:
    import base64

    import webui_server

    last = webui_server.encode_png(last_test_image().resize(image.size))
    cases = [({"loop": True, "last_image": last}, FRAMES, "loop ends the video on the first picture"),
             ({"last_image": last}, 2, "needs at least 3 frames, got 2"),
             ({"last_image": base64.b64encode(b"not a picture").decode()}, FRAMES,
              "the last frame (last_image) is not a readable")]
    for i2v, frames, expected in cases:
        response = server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, frames=frames, **i2v))
        detail = response.json().get("detail", response.text[:200])
        print(f"refused ({list(i2v)}, {frames} frames): HTTP {response.status_code}: {detail}")
        assert response.status_code == 422 and expected in detail and "\n" not in detail


# -- one video per picture (A1111 and classic Forge: sd-webui-animatediff writes the videos) -------------------

def check_one_video_per_picture(server, motion_module, image, checkpoint, outputs: Path) -> None:
    """Three pictures through the API: three GIFs named after them, seeds by the WebUI's batch rule, one
    I2V-Adapter picture line per video; frame 0 of the last video (AnimateDiff returns its frames) is its own
    picture's decode(z0)."""
    import json

    import webui_server

    pictures = [image, last_test_image().resize(image.size),
                Image.fromarray(np.roll(np.asarray(image), image.size[0] // 2, axis=1))]
    body = i2v_img2img(motion_module, image, images=[webui_server.encode_png(picture) for picture in pictures])
    # AnimateDiff's PNG format keeps every video's frames in a folder named as its files.
    body["alwayson_scripts"]["AnimateDiff"]["args"][0]["format"] = ["GIF", "PNG", "Frame"]
    started = time.time()
    with leaves_the_webui_as_before(server, {**payload(motion_module), "alwayson_scripts": {}}, "three pictures"):
        response = server.post("/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:400]
    items = [webui_server.decode_image(item) for item in response.json()["images"]]
    gifs = [item for item in items if item.format == "GIF"]
    frames = [np.asarray(item.convert("RGB")) for item in items if item.format != "GIF"]
    info = json.loads(response.json()["info"])
    written = sorted(path.name for path in outputs.rglob("*-picture-*.gif"))
    last_start = level_difference(frames[0], decoded_first_frame(checkpoint, pictures[2]))
    starts, folders = [], []
    for k, picture in enumerate(pictures, 1):
        found = [path for path in outputs.rglob(f"*-picture-{k}-*") if path.is_dir() and path.stat().st_mtime >= started - 1]
        assert len(found) == 1, found
        folders.append(found[0])
        starts.append(level_difference(np.asarray(Image.open(found[0] / "00000.png").convert("RGB")),
                                       decoded_first_frame(checkpoint, picture)))
    later = [np.asarray(Image.open(folder / "00003.png").convert("RGB")) for folder in folders[:2]]
    print(f"frame 0 of each video (saved frames) vs its own decode(z0): {starts}; frame 3 of video 2 vs video 1 "
          f"{level_difference(later[1], later[0])} levels")
    assert max(starts) <= 2 and level_difference(later[1], later[0]) > 10
    print(f"3 pictures: {len(gifs)} GIFs, written {written[-3:]}; seeds {info['all_seeds'][::FRAMES]}; frame 0 of "
          f"video 3 vs its decode(z0) {last_start} levels; GIF first frames differ "
          f"{level_difference(np.asarray(gifs[0].convert('RGB')), np.asarray(gifs[1].convert('RGB')))}")
    assert len(gifs) == 3 and len(frames) == FRAMES
    assert info["all_seeds"][::FRAMES] == [1, 1 + FRAMES, 1 + 2 * FRAMES]
    assert all(any(f"-picture-{k}-" in name for name in written) for k in (1, 2, 3))
    assert [f"I2V-Adapter picture: picture-{k}" in info["infotexts"][k - 1] for k in (1, 2, 3)] == [True] * 3
    assert last_start <= 2


def check_a_folder_with_an_unreadable_file(server, motion_module, image, folder: Path) -> None:
    """A server folder of two pictures and an unreadable file: two videos, the file named in the log."""
    import webui_server

    image.save(folder / "a.png")
    last_test_image().resize(image.size).save(folder / "b.png")
    (folder / "broken.png").write_bytes(b"not a picture")
    response = server.post("/sdapi/v1/img2img", i2v_img2img(motion_module, image, folder=str(folder)))
    assert response.status_code == 200, response.text[:400]
    gifs = [item for item in map(webui_server.decode_image, response.json()["images"]) if item.format == "GIF"]
    lines = [line for line in server.log_text().splitlines() if "broken.png" in line]
    print(f"folder with an unreadable file: {len(gifs)} GIFs; log: {lines[-1:]}")
    assert len(gifs) == 2 and lines and "skipped broken.png: not a readable picture" in lines[-1]
