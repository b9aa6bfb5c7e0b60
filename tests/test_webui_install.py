"""A fresh install as a new user meets it: the WebUI runs install.py, which adds what the extension needs.

Forge 2 ships no AnimateDiff and so nothing that brings imageio-ffmpeg, which MP4 and WEBM need. This module
removes imageio-ffmpeg from the WebUI's Python, starts the WebUI *without* --skip-install (its install step
must add the package back, from the package index), and then, with the package removed again and the install
step skipped, checks that an MP4 request is refused before sampling while GIF still works. It changes the
WebUI's Python, so it runs only when I2V_INSTALL_CHECK=1, for each WebUI whose variable is set
(I2V_NEW_FORGE_DIR, I2V_WEBUI_DIR, I2V_FORGE_DIR; their _PYTHON as elsewhere). The WebUI's own preparation runs
too, so it must pass offline: helper repositories as git checkouts at their pinned commits, and its
requirements met (``<VAR>_REQS_FILE``, e.g. I2V_NEW_FORGE_REQS_FILE, may name a requirements file it meets).
The package is put back at the end.
"""
import os
import subprocess
import time
from pathlib import Path

import pytest

HOSTS = [("I2V_NEW_FORGE", 7872, True), ("I2V_WEBUI", 7861, False), ("I2V_FORGE", 7871, True)]
pytestmark = pytest.mark.skipif(os.environ.get("I2V_INSTALL_CHECK") != "1", reason="I2V_INSTALL_CHECK is not 1")


def _python(settings):
    return os.environ.get(f"{settings}_PYTHON") or "python"


def _has(settings, module) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([_python(settings), "-c", code]).returncode == 0


def _pip(settings, *args):
    subprocess.run([_python(settings), "-m", "pip", *args, "-q"], check=True)


def _video_body(formats):
    import webui_server
    from webui_requests import SIZE, test_image

    return {"prompt": "a cat", "steps": 2, "width": SIZE, "height": SIZE, "sampler_name": "Euler", "seed": 1,
            "init_images": [webui_server.encode_png(test_image())],
            "alwayson_scripts": {"I2V-Adapter": {"args": [{"enable": True, "frames": 4, "formats": formats}]}}}


@pytest.mark.parametrize("settings,port,forge", HOSTS, ids=["forge-2", "a1111", "classic-forge"])
def test_install_adds_the_video_writer_and_a_missing_one_is_refused_before_sampling(settings, port, forge, tmp_path):
    import webui_server

    root = os.environ.get(f"{settings}_DIR")
    if not root:
        pytest.skip(f"{settings}_DIR is not set")
    had_it = _has(settings, "imageio_ffmpeg")
    try:
        _pip(settings, "uninstall", "-y", "imageio-ffmpeg")
        assert not _has(settings, "imageio_ffmpeg")
        with webui_server.running(Path(root), settings, port, tmp_path / "install.log", forge=forge,
                                  run_install=True) as server:
            installed = "imageio-ffmpeg for I2V-Adapter" in server.log_text()
            print(f"{settings}: the install step added imageio-ffmpeg: {installed}")
            assert installed and _has(settings, "imageio_ffmpeg")
            # What the WebUI already has is not installed again.
            assert "safetensors for I2V-Adapter" not in server.log_text()
            assert "opencv-python for I2V-Adapter" not in server.log_text()
            assert "einops for I2V-Adapter" not in server.log_text()
            if forge and settings == "I2V_NEW_FORGE":
                response = server.post("/sdapi/v1/img2img", _video_body(["MP4"]))
                assert response.status_code == 200, response.text[:300]
                import base64
                first = base64.b64decode(response.json()["images"][0])
                print(f"MP4 after the install step: {first[4:8]!r}, {len(first)} bytes")
                assert first[4:8] == b"ftyp"
        if settings != "I2V_NEW_FORGE":
            return  # there sd-webui-animatediff writes the videos
        _pip(settings, "uninstall", "-y", "imageio-ffmpeg")
        with webui_server.running(Path(root), settings, port, tmp_path / "skipped.log", forge=True) as server:
            steps_before = server.log_text().count("it/s]") + server.log_text().count("s/it]")
            start = time.time()
            response = server.post("/sdapi/v1/img2img", _video_body(["GIF", "MP4"]))
            seconds = time.time() - start
            print(f"MP4 without imageio-ffmpeg: HTTP {response.status_code} in {seconds:.1f} s: {response.text[:300]}")
            assert response.status_code == 422 and "need the imageio-ffmpeg package" in response.json()["detail"]
            assert server.log_text().count("it/s]") + server.log_text().count("s/it]") == steps_before  # no sampling
            gif = server.post("/sdapi/v1/img2img", _video_body(["GIF"]))
            assert gif.status_code == 200 and webui_server.decode_image(gif.json()["images"][0]).format == "GIF"
    finally:
        if had_it and not _has(settings, "imageio_ffmpeg"):
            _pip(settings, "install", "imageio-ffmpeg")
