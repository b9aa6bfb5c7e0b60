"""SDXL videos end to end in a real WebUI with sd-webui-animatediff's SDXL motion modules, through the API.

One run per WebUI whose variables are both set: I2V_WEBUI_DIR with I2V_WEBUI_SDXL_CHECKPOINT (A1111), and
I2V_FORGE_DIR with I2V_FORGE_SDXL_CHECKPOINT (classic Forge, its forge/master AnimateDiff). The checkpoint is a
path, or a name under models/Stable-diffusion (random weights are fine); the WebUI starts with it. Motion
modules are found in AnimateDiff's model folder by their release names: ``mm_sdxl_v10_beta.*``
(AnimateDiff-SDXL) and ``hsxl_temporal_layers.*`` (HotShot-XL); a kind that is absent is skipped. Optional:
the _PYTHON, _PORT and _ARGS variables of each WebUI, as for its other tests. SDXL in full precision needs
about 17 GB of memory.

Before the WebUI starts, the trainer runs a few steps on that checkpoint (as a diffusers folder built from it;
the CLIP tokenizer from the Hugging Face cache) and AnimateDiff-SDXL, at 64 px and 2 frames (about 17 GB for a
minute or two); its file is one of the adapters the videos are made with.
"""
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from webui_requests import (ADAPTER_FILE, FRAMES, check_frame_zero, decoded_first_frame, level_difference, payload,
                            test_image, video_frames, write_test_adapter)


@dataclass(frozen=True)
class Host:
    settings: str  # the prefix of the WebUI's variables
    port: int
    forge: bool

    @property
    def root(self) -> Path:
        return Path(os.environ[f"{self.settings}_DIR"])

    def checkpoint(self) -> Path:
        path = Path(os.environ[f"{self.settings}_SDXL_CHECKPOINT"])
        return path if path.is_absolute() else self.root / "models" / "Stable-diffusion" / path


HOSTS = [Host("I2V_WEBUI", 7861, forge=False), Host("I2V_FORGE", 7871, forge=True)]
HOST_PARAMS = [pytest.param(host, id=name, marks=pytest.mark.skipif(
    not (os.environ.get(f"{host.settings}_DIR") and os.environ.get(f"{host.settings}_SDXL_CHECKPOINT")),
    reason=f"{host.settings}_DIR and {host.settings}_SDXL_CHECKPOINT are not both set"))
    for name, host in zip(("a1111", "classic-forge"), HOSTS)]

SIZE = 128  # SDXL's three levels at 16x16, 8x8 and 4x4 latent pixels
SDXL_ADAPTER_FILE = "i2v_test_sdxl_random.safetensors"
TRAINED_SDXL_FILE = "i2v_test_sdxl_trained.safetensors"
MOTION_MODULES = {"AnimateDiff-SDXL": "mm_sdxl_v10_beta.*", "HotShot-XL": "hsxl_temporal_layers.*"}


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


@pytest.fixture(scope="module", params=HOST_PARAMS)
def host(request) -> Host:
    return request.param


@pytest.fixture(scope="module")
def trained_sdxl(host, tmp_path_factory) -> Path:
    """Three steps of the trainer on the WebUI's SDXL checkpoint and AnimateDiff-SDXL, where the WebUI looks."""
    from sdxl_folder import build_sdxl_folder
    from test_webui_trained_adapter import run_trainer, write_training_clips

    from i2v_adapter.pipeline.hub_files import CLIP_TOKENIZER, fetch

    checkpoint = host.checkpoint()
    if not checkpoint.is_file():
        pytest.skip(f"no SDXL checkpoint at {checkpoint}")
    root = tmp_path_factory.mktemp("trained-sdxl")
    out = host.root / "models" / "I2V-Adapter" / TRAINED_SDXL_FILE
    seconds = build_sdxl_folder(checkpoint, root / "sdxl", fetch([CLIP_TOKENIZER])[0])
    try:
        run = run_trainer([
            "--data", write_training_clips(root / "clips"), "--checkpoint", root / "sdxl",
            "--motion-module", host.root / "extensions" / "sd-webui-animatediff" / "model" /
            motion_module_file(host, "AnimateDiff-SDXL"), "--out", out, "--checkpoints-dir", root / "checkpoints",
            "--frames", 2, "--resolution", 64, "--stride", 2, "--steps", 3, "--learning-rate", 1e-3,
            "--workers", 0], root / "train.log")
    finally:
        shutil.rmtree(root / "sdxl")  # 6.5 GB
    losses = [json.loads(line)["loss"] for line in (root / "checkpoints" / "log.jsonl").open()]
    print(f"diffusers folder from the checkpoint in {seconds['all']:.0f} s; trained in {run['seconds']:.0f} s "
          f"(load included), losses {', '.join(f'{loss:.4f}' for loss in losses)}; {run['stdout'].strip()}")
    assert "70 layers, 204,883,200 parameters, steps 0..3" in run["stdout"]
    return out


@pytest.fixture(scope="module")
def webui(host, trained_sdxl, tmp_path_factory):
    import webui_server

    checkpoint = host.checkpoint()
    write_sdxl_adapter(write_test_adapter(host.root))  # the SD1.5 one too, for the refusal
    webui_server.link_extension(host.root)
    args = [*shlex.split(os.environ.get(f"{host.settings}_ARGS", "")), "--ckpt", str(checkpoint)]
    server = webui_server.WebUI(
        host.root, os.environ.get(f"{host.settings}_PYTHON") or sys.executable,
        int(os.environ.get(f"{host.settings}_PORT", host.port)),
        tmp_path_factory.mktemp("webui-sdxl") / "webui.log", args,
        launch_flags=webui_server.FORGE_LAUNCH_FLAGS if host.forge else webui_server.LAUNCH_FLAGS,
        extra_env=webui_server.forge_cache_env() if host.forge else None)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def motion_module_file(host: Host, kind: str) -> str:
    found = sorted((host.root / "extensions" / "sd-webui-animatediff" / "model").glob(MOTION_MODULES[kind]))
    if not found:
        pytest.skip(f"no {kind} motion module ({MOTION_MODULES[kind]}) in AnimateDiff's model folder")
    return found[0].name


@pytest.fixture(scope="module")
def image():
    return test_image().resize((SIZE, SIZE), Image.LANCZOS)


@pytest.fixture(scope="module")
def reference_frame_zero(host, image):
    return decoded_first_frame(host.checkpoint(), image)


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
def test_plain_animatediff_sdxl_makes_a_video(host, webui, kind):
    """The bed itself: AnimateDiff alone turns the SDXL checkpoint into an 8-frame video."""
    frames = video_frames(timed_post(webui, "/sdapi/v1/txt2img", sdxl_request(motion_module_file(host, kind))))
    assert len(frames) == FRAMES
    assert frames[0].shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("model", ["", SDXL_ADAPTER_FILE, TRAINED_SDXL_FILE],
                         ids=["training-free", "sdxl-adapter", "trained-sdxl-adapter"])
@pytest.mark.parametrize("kind", MOTION_MODULES)
def test_sdxl_video_starts_with_the_image(host, webui, kind, model, image, reference_frame_zero):
    i2v = {"enable": True, "model": model}
    response = timed_post(webui, "/sdapi/v1/img2img", sdxl_request(motion_module_file(host, kind), image, i2v))
    frames = video_frames(response)
    assert len(frames) == FRAMES
    check_frame_zero(f"{kind}, {model or 'training-free'}", frames[0], reference_frame_zero)
    print(f"frame 1 vs decode(z0): {level_difference(frames[1], reference_frame_zero)} levels")
    assert level_difference(frames[1], reference_frame_zero) > 10  # the other frames are generated
    assert f"I2V-Adapter model: {model}" in response.json()["info"] or not model


def test_sd15_adapter_with_sdxl_is_refused_naming_both(host, webui, image):
    i2v = {"enable": True, "model": ADAPTER_FILE}
    response = webui.post("/sdapi/v1/img2img",
                          sdxl_request(motion_module_file(host, "AnimateDiff-SDXL"), image, i2v))
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert f"{ADAPTER_FILE} was made for SD1.5" in detail and "is SDXL (70 attention layers)" in detail
