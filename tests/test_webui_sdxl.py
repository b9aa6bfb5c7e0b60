"""SDXL videos end to end in a real A1111 WebUI with sd-webui-animatediff's SDXL motion modules, through the API.

Runs only when I2V_WEBUI_DIR points at an A1111 checkout with sd-webui-animatediff and
I2V_WEBUI_SDXL_CHECKPOINT names an SDXL checkpoint (a path, or a name under models/Stable-diffusion; random
weights are fine). The WebUI starts with that checkpoint. Motion modules are found in AnimateDiff's model
folder by their release names: ``mm_sdxl_v10_beta.*`` (AnimateDiff-SDXL) and ``hsxl_temporal_layers.*``
(HotShot-XL); a kind that is absent is skipped. Optional: I2V_WEBUI_PYTHON, I2V_WEBUI_PORT (default 7861),
I2V_WEBUI_ARGS, as for the other A1111 tests. SDXL in full precision needs about 17 GB of memory.
"""
import os
import shlex
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from webui_requests import (ADAPTER_FILE, FRAMES, check_frame_zero, decoded_first_frame, level_difference, payload,
                            test_image, video_frames, write_test_adapter)

WEBUI = os.environ.get("I2V_WEBUI_DIR")
SDXL_CHECKPOINT = os.environ.get("I2V_WEBUI_SDXL_CHECKPOINT")
pytestmark = pytest.mark.skipif(not (WEBUI and SDXL_CHECKPOINT),
                                reason="I2V_WEBUI_DIR and I2V_WEBUI_SDXL_CHECKPOINT are not both set")

SIZE = 128  # SDXL's three levels at 16x16, 8x8 and 4x4 latent pixels
SDXL_ADAPTER_FILE = "i2v_test_sdxl_random.safetensors"
MOTION_MODULES = {"AnimateDiff-SDXL": "mm_sdxl_v10_beta.*", "HotShot-XL": "hsxl_temporal_layers.*"}


def checkpoint_path() -> Path:
    path = Path(SDXL_CHECKPOINT)
    return path if path.is_absolute() else Path(WEBUI) / "models" / "Stable-diffusion" / path


def write_sdxl_adapter(folder: Path) -> Path:
    """A random SDXL adapter of the real shapes in our safetensors format: 70 layers, non-zero to_out_ff."""
    import weight_fixtures
    from i2v_adapter.weights.adapter import AdapterWeights, LayerWeights
    from i2v_adapter.weights.files import save_adapter_weights

    generator = torch.Generator().manual_seed(11)

    def small(*shape):
        return (torch.randn(shape, generator=generator) * 0.02).half()

    layers = {ldm: LayerWeights(small(c, c), small(c, c), small(c)) for _, ldm, c in weight_fixtures.sdxl_layers()}
    weights = AdapterWeights(layers, source_format="test")
    assert weights.base == "sdxl"
    path = folder / SDXL_ADAPTER_FILE
    save_adapter_weights(weights, path)
    return path


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    import webui_server

    root = Path(WEBUI)
    checkpoint = checkpoint_path()
    if not checkpoint.is_file():
        pytest.skip(f"no SDXL checkpoint at {checkpoint}")
    write_sdxl_adapter(write_test_adapter(root))  # the SD1.5 one too, for the refusal
    webui_server.link_extension(root)
    args = [*shlex.split(os.environ.get("I2V_WEBUI_ARGS", "")), "--ckpt", str(checkpoint)]
    server = webui_server.WebUI(root, os.environ.get("I2V_WEBUI_PYTHON") or sys.executable,
                                int(os.environ.get("I2V_WEBUI_PORT", 7861)),
                                tmp_path_factory.mktemp("webui-sdxl") / "webui.log", args)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def motion_module_file(kind: str) -> str:
    found = sorted((Path(WEBUI) / "extensions" / "sd-webui-animatediff" / "model").glob(MOTION_MODULES[kind]))
    if not found:
        pytest.skip(f"no {kind} motion module ({MOTION_MODULES[kind]}) in AnimateDiff's model folder")
    return found[0].name


@pytest.fixture(scope="module")
def image():
    return test_image().resize((SIZE, SIZE), Image.LANCZOS)


@pytest.fixture(scope="module")
def reference_frame_zero(image):
    return decoded_first_frame(checkpoint_path(), image)


def sdxl_request(motion_module: str, image=None, i2v=None, **extra) -> dict:
    import webui_server

    if image is not None:
        extra["init_images"] = [webui_server.encode_png(image)]
    return payload(motion_module, i2v=i2v, width=SIZE, height=SIZE, **extra)


def timed_post(server, path: str, body: dict):
    start = time.time()
    response = server.post(path, body)
    print(f"{path} ({body['alwayson_scripts']['AnimateDiff']['args'][0]['model']}): {time.time() - start:.1f} s")
    return response


@pytest.mark.parametrize("kind", MOTION_MODULES)
def test_plain_animatediff_sdxl_makes_a_video(webui, kind):
    """The bed itself: AnimateDiff alone turns the SDXL checkpoint into an 8-frame video."""
    frames = video_frames(timed_post(webui, "/sdapi/v1/txt2img", sdxl_request(motion_module_file(kind))))
    assert len(frames) == FRAMES
    assert frames[0].shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("model", ["", SDXL_ADAPTER_FILE], ids=["training-free", "sdxl-adapter"])
@pytest.mark.parametrize("kind", MOTION_MODULES)
def test_sdxl_video_starts_with_the_image(webui, kind, model, image, reference_frame_zero):
    i2v = {"enable": True, "model": model}
    response = timed_post(webui, "/sdapi/v1/img2img", sdxl_request(motion_module_file(kind), image, i2v))
    frames = video_frames(response)
    assert len(frames) == FRAMES
    check_frame_zero(f"{kind}, {model or 'training-free'}", frames[0], reference_frame_zero)
    print(f"frame 1 vs decode(z0): {level_difference(frames[1], reference_frame_zero)} levels")
    assert level_difference(frames[1], reference_frame_zero) > 10  # the other frames are generated
    assert f"I2V-Adapter model: {model}" in response.json()["info"] or not model


def test_sd15_adapter_with_sdxl_is_refused_naming_both(webui, image):
    i2v = {"enable": True, "model": ADAPTER_FILE}
    response = webui.post("/sdapi/v1/img2img", sdxl_request(motion_module_file("AnimateDiff-SDXL"), image, i2v))
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert "made for SD1.5" in detail and "loaded model is SDXL" in detail
