"""One video per picture in a real Forge 2: a list of pictures through the API, a server folder with an unreadable
file, an empty folder. Needs what tests/test_webui_new_forge.py needs."""
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_webui_new_forge import NEW_FORGE, first_file, motion_file, server, timed_post, txt2img  # noqa: F401
from webui_requests import (FRAMES, SIZE, decoded_first_frame, last_test_image, leaves_the_webui_as_before,
                            level_difference, test_image)

pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")


def three_pictures() -> list[Image.Image]:
    third = Image.fromarray(np.roll(np.asarray(test_image()), SIZE // 2, axis=1))
    return [test_image(), last_test_image(), third]


def many_request(frames=FRAMES, **i2v) -> dict:
    import webui_server

    body = txt2img({"enable": True, "model": "", "motion_module": motion_file("*v3*.safetensors"), "frames": frames,
                    "formats": ["GIF", "PNG"], **i2v}, seed=5)
    body["init_images"] = [webui_server.encode_png(test_image())]  # img2img needs one; the list decides
    return body


def videos_and_frames(response, count: int, frames=FRAMES):
    import webui_server

    assert response.status_code == 200, response.text[:400]
    items = [webui_server.decode_image(item) for item in response.json()["images"]]
    gifs, pictures = items[:count], [np.asarray(item.convert("RGB")) for item in items[count:]]
    assert all(gif.format == "GIF" for gif in gifs) and len(pictures) == count * frames
    return gifs, [pictures[k * frames:(k + 1) * frames] for k in range(count)]


@contextmanager
def progress_texts(server):
    """Every progress text the WebUI reports while the block runs (polled as the page polls it)."""
    import threading
    import time

    seen, done = set(), threading.Event()

    def poll():
        while not done.is_set():
            text = server.get("/sdapi/v1/progress?skip_current_image=true").json().get("textinfo")
            if text:
                seen.add(text)
            time.sleep(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield seen
    finally:
        done.set()
        poller.join(timeout=10)


def written(stem_part: str) -> list[Path]:
    folder = Path(NEW_FORGE) / "outputs" / "img2img-images" / "i2v-adapter"
    return sorted(path for path in folder.iterdir() if stem_part in path.name and path.suffix == ".gif")


def test_three_pictures_make_three_videos_each_starting_on_its_picture(server):
    import webui_server

    checkpoint = first_file(Path(NEW_FORGE) / "models" / "Stable-diffusion", "*.safetensors")
    pictures = three_pictures()
    references = [decoded_first_frame(checkpoint, picture) for picture in pictures]
    body = many_request(images=[webui_server.encode_png(picture) for picture in pictures])
    with leaves_the_webui_as_before(server, txt2img(), "three pictures, one video each"):
        with progress_texts(server) as seen:
            response = timed_post(server, "/sdapi/v1/img2img", body)
    print(f"progress texts: {sorted(seen)}")
    assert {f"I2V-Adapter: video {k} of 3 (picture-{k})" for k in (1, 2, 3)} <= seen
    gifs, videos = videos_and_frames(response, 3)
    info = json.loads(response.json()["info"])
    starts = [level_difference(video[0], reference) for video, reference in zip(videos, references)]
    print(f"3 pictures: frame 0 vs its own decode(z0) {starts}; video 2 vs video 1 frame 3 "
          f"{level_difference(videos[1][3], videos[0][3])}; seeds {info['all_seeds'][::FRAMES]}; "
          f"files {[path.name for path in written('-picture-2-')][-1:]}")
    assert max(starts) <= 2
    assert level_difference(videos[1][3], videos[0][3]) > 10
    assert info["all_seeds"][::FRAMES] == [5, 5 + FRAMES, 5 + 2 * FRAMES]  # the WebUI's rule for a batch count
    # One infotext per video first (the videos come first), each naming its picture.
    assert [f"I2V-Adapter picture: picture-{k}" in info["infotexts"][k - 1] for k in (1, 2, 3)] == [True] * 3
    assert written("-picture-3-")


def test_a_folder_with_an_unreadable_file_makes_the_others_and_names_it(server, tmp_path):
    for name, picture in zip(("a", "b"), three_pictures()):
        picture.save(tmp_path / f"{name}.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    response = timed_post(server, "/sdapi/v1/img2img", many_request(folder=str(tmp_path), frames=4))
    gifs, videos = videos_and_frames(response, 2, frames=4)
    log = server.log_text()
    print(f"folder: {len(gifs)} videos; log: {[line for line in log.splitlines() if 'broken.png' in line][-1:]}")
    assert "skipped broken.png: not a readable picture" in log
    assert written("-a-") and written("-b-")


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_an_empty_or_missing_folder_is_refused_with_one_sentence(server, tmp_path, kind):
    folder = tmp_path / "nothing"
    if kind == "empty":
        folder.mkdir()
    with leaves_the_webui_as_before(server, txt2img(), f"a refused {kind} folder"):
        response = server.post("/sdapi/v1/img2img", many_request(folder=str(folder)))
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert ("holds no pictures" if kind == "empty" else "there is no folder") in detail


def test_a_folder_is_refused_where_the_webui_hides_its_folders(tmp_path, monkeypatch):
    """Forge 2 started with --hide-ui-dir-config: a folder request is refused with one sentence; uploads work."""
    import os

    import webui_server

    for name, value in (("PYTHON", os.environ.get("I2V_NEW_FORGE_PYTHON")), ("PORT", "7874"),
                        ("ARGS", f"{os.environ.get('I2V_NEW_FORGE_ARGS', '')} --hide-ui-dir-config")):
        if value:
            monkeypatch.setenv(f"I2V_NEW_FORGE_HIDDEN_{name}", value)
    test_image().save(tmp_path / "a.png")
    with webui_server.running(Path(NEW_FORGE), "I2V_NEW_FORGE_HIDDEN", 7874, tmp_path / "forge.log",
                              forge=True) as hidden:
        response = hidden.post("/sdapi/v1/img2img", many_request(folder=str(tmp_path), frames=4))
        assert response.status_code == 422, response.text[:300]
        detail = response.json()["detail"]
        print(f"refused: {detail}")
        assert "--hide-ui-dir-config" in detail and "upload the pictures instead" in detail
        uploaded = hidden.post("/sdapi/v1/img2img", many_request(images=[webui_server.encode_png(test_image())] * 2,
                                                                 frames=4))
        videos_and_frames(uploaded, 2, frames=4)
