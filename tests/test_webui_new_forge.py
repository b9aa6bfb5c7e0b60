"""The new Forge (``backend/``, gradio 4): no AnimateDiff exists there, so the extension must load, show its
panel, refuse an enabled request with one sentence, and change nothing else.

Runs only when I2V_NEW_FORGE_DIR points at a checkout of lllyasviel/stable-diffusion-webui-forge ``main`` with
an SD1.5 checkpoint (random weights are fine). Optional: I2V_NEW_FORGE_PYTHON, I2V_NEW_FORGE_PORT (default
7872), I2V_NEW_FORGE_ARGS (extra launch flags).
"""
import os
import re
from pathlib import Path

import numpy as np
import pytest
from webui_requests import SIZE, test_image

from i2v_adapter.webui.forge import NEW_FORGE_REASON

NEW_FORGE = os.environ.get("I2V_NEW_FORGE_DIR")
pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import webui_server

    with webui_server.running(Path(NEW_FORGE), "I2V_NEW_FORGE", 7872,
                              tmp_path_factory.mktemp("new-forge") / "forge.log", forge=True) as webui:
        yield webui


def txt2img(i2v=None) -> dict:
    body = dict(prompt="a cat", steps=2, width=SIZE, height=SIZE, cfg_scale=7, sampler_name="Euler", seed=1)
    if i2v is not None:
        body["alwayson_scripts"] = {"I2V-Adapter": {"args": [i2v]}}
    return body


def pictures(response) -> list[np.ndarray]:
    import webui_server

    assert response.status_code == 200, response.text[:500]
    return [np.asarray(webui_server.decode_image(item).convert("RGB")) for item in response.json()["images"]]


@pytest.fixture(scope="module")
def baseline(server):
    """A plain txt2img before the extension ever got a request in this server."""
    return pictures(server.post("/sdapi/v1/txt2img", txt2img()))


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


def test_the_panel_says_why_it_cannot_animate(server):
    components = server.get("/config").json()["components"]
    elem_ids = {c.get("props", {}).get("elem_id") for c in components}
    texts = [c.get("props", {}).get("value") for c in components if c.get("type") == "markdown"]
    print(f"panel components: {sorted(e for e in elem_ids if e and 'i2v_adapter' in e)}")
    assert {"txt2img_i2v_adapter", "img2img_i2v_adapter", "txt2img_i2v_adapter_model"} <= elem_ids
    assert texts.count(NEW_FORGE_REASON) == 2  # txt2img and img2img
    # Nothing in the page can switch the extension on: opening the panel must not make generations fail.
    enables = [c for c in components if c.get("props", {}).get("elem_id", "").endswith("i2v_adapter_enable")]
    assert len(enables) == 2
    assert all(c["type"] == "checkbox" and c["props"]["value"] is False and c["props"]["visible"] is False
               for c in enables)


def test_an_enabled_request_is_refused_with_the_sentence(server, baseline):
    import webui_server

    response = server.post("/sdapi/v1/txt2img", txt2img({"enable": True,
                                                          "image": webui_server.encode_png(test_image())}))
    print(f"enabled request: HTTP {response.status_code} {response.text[:300]}")
    assert response.status_code == 422
    assert response.json()["detail"] == NEW_FORGE_REASON


def test_zz_requests_without_the_extension_are_bit_identical(server, baseline):
    # Runs last (file order): after the refused request above.
    for body in (txt2img(), txt2img({"enable": False})):
        after = pictures(server.post("/sdapi/v1/txt2img", body))
        assert len(after) == len(baseline) and all(np.array_equal(a, b) for a, b in zip(after, baseline))
