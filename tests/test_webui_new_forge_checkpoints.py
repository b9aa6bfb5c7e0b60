"""Forge 2 with checkpoints the extension cannot animate: each refused with one sentence (HTTP 422), and plain
generations just before and after a refusal are bit-identical.

Runs when I2V_NEW_FORGE_DIR is set (see test_webui_new_forge.py); each case needs its checkpoint in
models/Stable-diffusion (random weights of the real shapes are fine): an SDXL one (a .safetensors file with "xl"
in its name; Forge 2 then needs about 17 GB of memory), an SD1.5 one stored as GGUF (a .gguf file) and a second
checkpoint for the NF4 case (Forge 2 reads 'Diffusion in Low Bits' when the selection changes; bitsandbytes installed).
The GGUF and NF4 cases skip, saying why, where Forge 2 itself cannot run such a UNet.
"""
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_webui_new_forge import NEW_FORGE, motion_file, server, txt2img, video_request  # noqa: F401
from webui_requests import leaves_the_webui_as_before

pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")

SDXL_MISMATCH = ("I2V-Adapter: {module} is a motion module for SD1.5 and {checkpoint} is an SDXL checkpoint: choose a "
                 "motion module for SDXL (AnimateDiff-SDXL or HotShot-XL) or load an SD1.5 checkpoint.")
NF4_REFUSAL = ("I2V-Adapter cannot animate a UNet stored as NF4: set 'Diffusion in Low Bits' to Automatic or a "
               "float format, or load a full-precision checkpoint.")
GGUF_REFUSAL = ("I2V-Adapter cannot animate a UNet stored as GGUF (the loaded checkpoint is a .gguf file): load a "
                "full-precision checkpoint (.safetensors or .ckpt).")


@contextmanager
def checkpoint_selected(server, wanted):
    """The first checkpoint whose file name passes ``wanted`` selected (Forge 2 loads it at the next generation);
    the previous one selected again afterwards."""
    models = server.get("/sdapi/v1/sd-models").json()
    chosen = next((model for model in models if wanted(Path(model["filename"]).name.lower())), None)
    if chosen is None:
        pytest.skip(f"no such checkpoint among {[model['model_name'] for model in models]}")
    previous = server.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    assert server.post("/sdapi/v1/options", {"sd_model_checkpoint": chosen["title"]}).status_code == 200
    try:
        yield chosen["model_name"]
    finally:
        server.post("/sdapi/v1/options", {"sd_model_checkpoint": previous})


@contextmanager
def unet_storage(server, storage: str):
    """'Diffusion in Low Bits' set to ``storage`` for the selected checkpoint, Automatic again afterwards.

    Forge 2 reads that setting when the checkpoint selection changes: the API selects another one and back.
    """
    current = server.get("/sdapi/v1/options").json()["sd_model_checkpoint"]  # a title, a name or a file name

    def is_current(model) -> bool:
        return current in (model["title"], model["model_name"], Path(model["filename"]).name) or \
            model["title"].startswith(f"{current} ")

    other = next((model["title"] for model in server.get("/sdapi/v1/sd-models").json() if not is_current(model)), None)
    if other is None:
        pytest.skip("needs a second checkpoint to make Forge 2 read 'Diffusion in Low Bits' again")

    def select(value):
        assert server.post("/sdapi/v1/options", {"forge_unet_storage_dtype": value,
                                                 "sd_model_checkpoint": other}).status_code == 200
        assert server.post("/sdapi/v1/options", {"sd_model_checkpoint": current}).status_code == 200

    select(storage)
    try:
        yield
    finally:
        select("Automatic")


def refused(server, expected: str) -> None:
    start = time.time()
    response = server.post("/sdapi/v1/img2img", video_request(motion_file("*v2*.safetensors")))
    print(f"HTTP {response.status_code} in {time.time() - start:.1f} s: {response.text[:300]}")
    assert response.status_code == 422 and response.json()["detail"] == expected


def test_an_sd15_motion_module_with_an_sdxl_checkpoint_is_refused_naming_both(server):
    with checkpoint_selected(server, lambda name: "xl" in name and name.endswith(".safetensors")) as name:
        # The plain run before the refusal loads the SDXL checkpoint.
        with leaves_the_webui_as_before(server, txt2img(), "an SD1.5 motion module with SDXL refused"):
            refused(server, SDXL_MISMATCH.format(module=motion_file("*v2*.safetensors"),
                                                 checkpoint=f"{name}.safetensors"))


def test_a_gguf_checkpoint_runs_plain_and_is_refused(server):
    with checkpoint_selected(server, lambda name: name.endswith(".gguf")):
        loading = server.post("/sdapi/v1/txt2img", txt2img())
        if loading.status_code != 200 and "ParameterGGUF" in loading.text:
            # Forge 2 wraps every GGUF tensor as a Parameter subclass whose detach() gives a plain tensor; torch
            # releases newer than Forge's own refuse to make a Parameter of it (its non-Linear layers do).
            pytest.skip(f"this Forge cannot load a GGUF checkpoint with torch here: {loading.json()['message'][:120]}")
        with leaves_the_webui_as_before(server, txt2img(), "a GGUF checkpoint refused"):
            refused(server, GGUF_REFUSAL)
        # Forge 2 read the file as GGUF and built its UNet with quantised weights.
        assert "Using Detected UNet Type: gguf" in server.log_text()


def test_a_unet_stored_as_nf4_runs_plain_and_is_refused(server):
    # Forge 2 quantises the UNet's Linear layers with bitsandbytes when it loads the checkpoint.
    with unet_storage(server, "bnb-nf4"):
        loading = server.post("/sdapi/v1/txt2img", txt2img())
        if loading.status_code != 200:
            # Forge's own failure: it quantises NF4 weights only when it moves them to a CUDA device, so on a CPU
            # its 4-bit layers have no quantisation state ("quant_state is required").
            pytest.skip(f"this Forge cannot run a UNet stored as NF4 here: {loading.text[:200]}")
        assert "K-Model Created: {'storage_dtype': 'nf4'" in server.log_text()
        with leaves_the_webui_as_before(server, txt2img(), "a UNet stored as NF4 refused"):
            refused(server, NF4_REFUSAL)
