"""Forge in a real browser: the page loads with the panel, the panel opens and previews, the console stays clean.

One check per Forge whose variable is set: I2V_FORGE_DIR (classic Forge, reForge, Forge Classic; gradio 3.41)
and I2V_NEW_FORGE_DIR (Forge 2; gradio 4.40), with their _PYTHON and _PORT variables as for
test_webui_forge.py and test_webui_new_forge.py. Needs Chromium and chromedriver.
"""
import os
from pathlib import Path

import pytest

FORGES = [("I2V_FORGE", 7871), ("I2V_NEW_FORGE", 7872)]

# Forge 2's motion section: each control and a phrase of the hint the pointer shows over it.
MOTION_HINTS = {"motion_module": "for SDXL AnimateDiff-SDXL or HotShot-XL (8-frame windows)",
                "motion_refresh": "Scan models/AnimateDiff",
                "frames": "Length of the video", "fps": "per second", "context_length": "one window",
                "context_overlap": "neighbouring windows", "formats": "WEBM and animated WEBP",
                "motion_only": "Motion only: a plain AnimateDiff video", "closed_loop": "plays as a loop",
                "motion_lora": "Camera moves", "motion_lora_picker": "to add it to the list",
                "motion_lora_refresh": "Scan models/AnimateDiff/lora", "quality": "Quality of the MP4",
                "webp_lossless": "without any loss"}


def hovered_hint(page, selector: str) -> str:
    """The title the browser shows with the pointer over the element's centre: the nearest one up the tree."""
    from selenium.webdriver.common.action_chains import ActionChains

    page.script("gradioApp().querySelector(arguments[0]).scrollIntoView({block: 'center'});", selector)
    ActionChains(page.driver).move_to_element(page.element(selector)).perform()
    return page.script("var all = document.querySelectorAll(':hover'); var el = all[all.length - 1];"
                       "while (el && !el.title) el = el.parentElement; return el ? el.title : '';")


def check_motion_hints(page) -> None:
    hints = {}
    for name, phrase in MOTION_HINTS.items():
        selector = f"#img2img_i2v_adapter_{name}"
        page.wait_for(lambda: page.visible(selector), 30, f"{name} is not shown")
        hints[name] = hovered_hint(page, selector)
        print(f"hover {name}: {hints[name][:70]}")
        assert phrase in hints[name], (name, hints[name])
    assert len(set(hints.values())) == len(hints)  # each control its own hint


def _chosen_source(page) -> str:
    return page.script("var box = gradioApp().querySelector('#img2img_i2v_adapter_motion_only input:checked');"
                       "return box ? box.value : '';")


@pytest.mark.parametrize("settings,port", FORGES, ids=["classic-forge", "forge-2"])
def test_page_loads_and_the_panel_opens_without_console_errors(settings, port, tmp_path):
    root = os.environ.get(f"{settings}_DIR")
    if not root:
        pytest.skip(f"{settings}_DIR is not set")
    import webui_server
    from webui_browser import Page, start_browser
    from webui_requests import test_image

    with webui_server.running(Path(root), settings, port, tmp_path / "forge.log", forge=True) as server:
        driver = start_browser()
        try:
            page = Page(driver, server.url)
            page.open()
            for tab in ("txt2img", "img2img"):
                assert page.exists(f"#{tab}_i2v_adapter_enable"), tab
                assert page.exists(f"#{tab}_send_to_i2v_adapter"), tab
            page.script("switch_to_img2img();")
            page.click("#img2img_i2v_adapter_enable .label-wrap")
            page.wait_for(lambda: page.visible("#img2img_i2v_adapter_scale"), 30, "the panel did not open")
            page.wait_for(lambda: page.script("var el = gradioApp().querySelector('#img2img_i2v_adapter_scale');"
                                              "return el && el.title;"), 10, "no hover hint")
            if settings == "I2V_NEW_FORGE":
                check_motion_hints(page)
            picture = tmp_path / "picture.png"
            test_image().save(picture)
            page.element("#img2img_i2v_adapter_image input[type=file]").send_keys(str(picture))
            page.wait_for(lambda: page.image_sources("#img2img_i2v_adapter_image"), 30, "no picture in the panel")
            page.click("#img2img_i2v_adapter_preview_button")
            caption = "#img2img_i2v_adapter_preview_caption"
            # gradio 4 shows its progress inside the caption until our sentence replaces it
            page.wait_for(lambda: page.exists(f"{caption} p[class^=i2v-adapter-preview]"), 300, "no preview caption")
            assert "timestep" in page.text(caption), page.text(caption)
            assert page.image_sources("#img2img_i2v_adapter_preview_prior")
            print(f"\n{settings} preview: {page.text('#img2img_i2v_adapter_preview_caption')}")
            folder = os.environ.get("I2V_SCREENSHOTS")
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                page.screenshot("#img2img_i2v_adapter_enable", Path(folder) / f"panel-{settings.lower()}.png")
            errors = page.console_errors()
            print(f"\n{settings}: console entries {len(page.console)}, errors {len(errors)}")
            assert errors == []
        finally:
            driver.quit()


def test_forge2_infotext_pastes_the_motion_fields_back(tmp_path):
    """A video's infotext in the prompt box, the paste button: the panel opens with the video's motion settings."""
    root = os.environ.get("I2V_NEW_FORGE_DIR")
    if not root:
        pytest.skip("I2V_NEW_FORGE_DIR is not set")
    import json

    import webui_server
    from webui_browser import Page, start_browser
    from webui_requests import ADAPTER_FILE, SIZE, first_file, test_image, write_test_adapter

    write_test_adapter(Path(root))
    module = first_file(Path(root) / "models" / "AnimateDiff", "*v3*.safetensors").name
    settings = {"enable": True, "model": ADAPTER_FILE, "motion_module": module, "frames": 6, "fps": 12,
                "context_length": 4, "context_overlap": 1, "formats": ["MP4", "PNG"], "closed_loop": "R+P",
                "quality": 60, "webp_lossless": True}
    body = {"prompt": "a cat", "steps": 2, "width": SIZE, "height": SIZE, "sampler_name": "Euler", "seed": 1,
            "init_images": [webui_server.encode_png(test_image())],
            "alwayson_scripts": {"I2V-Adapter": {"args": [settings]}}}
    with webui_server.running(Path(root), "I2V_NEW_FORGE", 7872, tmp_path / "forge.log", forge=True) as server:
        response = server.post("/sdapi/v1/img2img", body)
        assert response.status_code == 200, response.text[:300]
        infotext = json.loads(response.json()["info"])["infotexts"][0]
        print(f"\ninfotext: {infotext}")
        driver = start_browser()
        try:
            page = Page(driver, server.url)
            page.open()
            page.script("switch_to_img2img();")
            page.set_value("#img2img_prompt textarea", infotext)
            page.click("#img2img_tools #paste")
            frames = "#img2img_i2v_adapter_frames input[type=number]"
            page.wait_for(lambda: page.script("return gradioApp().querySelector(arguments[0]).value;", frames) == "6",
                          60, "frames were not pasted")
            pasted = {name: page.script("return gradioApp().querySelector(arguments[0]).value;",
                                        f"#img2img_i2v_adapter_{name} input[type=number]")
                      for name in ("frames", "fps", "context_length", "context_overlap", "quality")}
            for name in ("motion_module", "closed_loop"):
                pasted[name] = page.script("return gradioApp().querySelector(arguments[0]).value;",
                                           f"#img2img_i2v_adapter_{name} input")
            pasted["webp_lossless"] = page.checked("#img2img_i2v_adapter_webp_lossless input")
            pasted["source"] = _chosen_source(page)
            pasted["formats"] = page.script(
                "return Array.from(gradioApp().querySelectorAll('#img2img_i2v_adapter_formats label'))"
                ".filter(function(l) { return l.querySelector('input').checked; })"
                ".map(function(l) { return l.textContent.trim(); });")
            pasted["enable"] = page.checked("#img2img_i2v_adapter_enable-visible-checkbox")
            print(f"pasted: {pasted}")
            assert pasted == {"frames": "6", "fps": "12", "context_length": "4", "context_overlap": "1",
                              "quality": "60", "motion_module": module, "closed_loop": "loop motion and prompt travel",
                              "webp_lossless": True, "source": "from a picture", "formats": ["MP4", "PNG"],
                              "enable": True}
            assert page.visible("#img2img_i2v_adapter_main_row")
            # A motion-only video's infotext: the choice comes back and the picture settings hide.
            motion_only = {"enable": True, "motion_only": True, "motion_module": module, "frames": 4,
                           "formats": ["GIF"], "motion_lora": ""}
            response = server.post("/sdapi/v1/txt2img", {**body, "init_images": None,
                                                         "alwayson_scripts": {"I2V-Adapter": {"args": [motion_only]}}})
            assert response.status_code == 200, response.text[:300]
            page.set_value("#img2img_prompt textarea", json.loads(response.json()["info"])["infotexts"][0])
            page.click("#img2img_tools #paste")
            page.wait_for(lambda: _chosen_source(page) == "motion only", 60, "motion only was not pasted")
            page.wait_for(lambda: not page.visible("#img2img_i2v_adapter_main_row"), 30, "the picture row stays")
            print("motion only pasted: the picture settings are hidden")
            assert page.console_errors() == []
        finally:
            driver.quit()



@pytest.mark.parametrize("settings,port", FORGES, ids=["classic-forge", "forge-2"])
def test_batch_tab_makes_one_video_per_picture(settings, port, tmp_path):
    """The img2img Batch tab with I2V-Adapter on, a folder of two pictures and an unreadable file: two videos named
    after the pictures in the tab's output folder. On classic Forge sd-webui-animatediff would otherwise make the
    folder the frames of one video; Forge 2 uses the panel's own motion section."""
    root = os.environ.get(f"{settings}_DIR")
    if not root:
        pytest.skip(f"{settings}_DIR is not set")
    import webui_server
    from webui_browser import Page, start_browser
    from webui_requests import FRAMES, last_test_image, test_image

    pictures, out = tmp_path / "pictures", tmp_path / "out"
    pictures.mkdir()
    test_image().save(pictures / "first.png")
    last_test_image().save(pictures / "second.png")
    (pictures / "third.png").write_bytes(b"not a picture")
    video = ([("img2img_i2v_adapter_frames", 4)] if settings == "I2V_NEW_FORGE" else
             [("img2img-ad-video-length", FRAMES), ("img2img-ad-batch-size", FRAMES)])
    with webui_server.running(Path(root), settings, port, tmp_path / "forge.log", forge=True) as server:
        driver = start_browser()
        try:
            page = Page(driver, server.url)
            page.open()
            page.script("switch_to_img2img();")
            for name, value in [("img2img_width", 64), ("img2img_height", 64), ("img2img_steps", 2), *video]:
                page.set_number(name, value)
            if settings == "I2V_FORGE":
                page.click("#img2img-ad-enable input")
            page.click("#img2img_i2v_adapter_enable-visible-checkbox")
            page.script("Array.from(gradioApp().querySelectorAll('#mode_img2img button'))"
                        ".find(b => b.textContent.trim() === 'Batch').click();")
            page.script("var b = Array.from(gradioApp().querySelectorAll('#img2img_batch_source button'))"
                        ".find(b => b.textContent.trim() === 'From directory'); if (b) b.click();")
            page.set_value("#img2img_batch_input_dir textarea", str(pictures))
            page.set_value("#img2img_batch_output_dir textarea", str(out))
            page.click("#img2img_generate")
            page.wait_for(lambda: len(list(out.rglob("*.gif"))) >= 2, 900, "the Batch tab wrote no two videos")
            names = sorted(path.name for path in out.rglob("*.gif"))
            print(f"{settings} Batch tab: {names}; log: "
                  f"{[line for line in server.log_text().splitlines() if 'third.png' in line][-1:]}")
            assert len(names) == 2 and "-first-" in names[0] and "-second-" in names[1]
        finally:
            driver.quit()
