"""Send to I2V-Adapter on classic Forge (gradio 3.41) in a real browser, as a user does it on A1111.

Runs only when I2V_FORGE_DIR is set (classic Forge, reForge or Forge Classic; see test_webui_forge.py for
its _PYTHON and _PORT variables) and Chromium with chromedriver are installed (CHROME_BIN and CHROMEDRIVER
override where). I2V_SCREENSHOTS: a folder for a screenshot of the panel with the sent picture.
The steps: a txt2img picture, our send-to button under the gallery, and then the same picture in the
img2img panel's frame-0 image and in img2img's own image, with its size and prompt, the panel on and open.
"""
import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui_requests import SIZE, level_difference

FORGE = os.environ.get("I2V_FORGE_DIR")
pytestmark = pytest.mark.skipif(not FORGE, reason="I2V_FORGE_DIR is not set")

PANEL = "#img2img_i2v_adapter_enable"


def picture_at(url: str) -> np.ndarray:
    """The pixels behind an <img> source: a data URL (an uploaded or pasted picture) or a file the server shows."""
    import requests

    if url.startswith("data:"):
        data = base64.b64decode(url.split(",", 1)[1])
    else:
        response = requests.get(url, timeout=60)
        assert response.ok, url
        data = response.content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_txt2img_picture_sent_to_i2v_adapter_lands_in_img2img_and_the_panel(tmp_path):
    import webui_server
    from webui_browser import Page, start_browser

    with webui_server.running(Path(FORGE), "I2V_FORGE", 7871, tmp_path / "forge.log", forge=True) as server:
        driver = start_browser()
        try:
            page = Page(driver, server.url)
            page.open()
            page.generate_txt2img(SIZE)
            generated = picture_at(page.image_sources("#txt2img_gallery")[0])
            assert generated.shape == (SIZE, SIZE, 3)

            page.click("#txt2img_send_to_i2v_adapter")
            page.wait_for(lambda: page.visible("#img2img_i2v_adapter_image"), 30, "the img2img tab did not open")
            panel = page.wait_for(lambda: page.image_sources("#img2img_i2v_adapter_image"), 30,
                                  "no picture in the panel")
            img2img = page.wait_for(lambda: page.image_sources("#img2img_image"), 30, "no img2img picture")
            for where, sources in (("panel", panel), ("img2img", img2img)):
                difference = level_difference(picture_at(sources[0]), generated)
                print(f"\n{where} picture vs the txt2img picture: {difference} levels")
                assert difference == 0, where
            assert page.checked(f"{PANEL}-visible-checkbox"), "the panel was not switched on"
            assert page.script("return gradioApp().querySelector(arguments[0] + ' .label-wrap')"
                               ".classList.contains('open');", PANEL), "the panel was not opened"
            width = page.script("return gradioApp().querySelector('#img2img_width input[type=number]').value;")
            assert int(width) == SIZE, "the picture's size did not travel"
            assert "a cat" in page.script("return gradioApp().querySelector('#img2img_prompt textarea').value;")
            folder = os.environ.get("I2V_SCREENSHOTS")
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                page.screenshot(PANEL, Path(folder) / "send-to-classic-forge.png")
            errors = page.console_errors()
            print(f"console entries {len(page.console)}, errors {len(errors)}")
            assert errors == []
        finally:
            driver.quit()
