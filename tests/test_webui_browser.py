"""The panel in a real browser: a real A1111 page in headless Chromium, driven as a user would.

Runs only when I2V_WEBUI_DIR points at an A1111 checkout as for test_webui_a1111.py (sd-webui-animatediff
with a motion module, an SD1.5 checkpoint; random weights are fine) and Chromium with chromedriver are
installed (CHROME_BIN and CHROMEDRIVER override where). I2V_SCREENSHOTS: a folder to write the panel's
screenshots to. The tests run in order on one page, one user's session: txt2img picture, Send to
I2V-Adapter, Preview, hints, a video.
"""
import os
import re
from pathlib import Path

import pytest

from webui_requests import FRAMES, SIZE, write_test_adapter

WEBUI = os.environ.get("I2V_WEBUI_DIR")
pytestmark = pytest.mark.skipif(not WEBUI, reason="I2V_WEBUI_DIR is not set")

PANEL = "#img2img_i2v_adapter_enable"
OFFICIAL_NAME = "i2v_module.pth"
CONTROLS = ["image", "last_image", "loop", "model", "refresh", "preset", "scale", "ip_adapter", "t0", "p", "blur_sigma",
            "color_match", "preview_button"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import shutil

    import webui_server

    root = Path(WEBUI)
    models = write_test_adapter(root)
    # A file under the official name: the weights dropdown must default to it.
    official = models / OFFICIAL_NAME
    shutil.copy(models / "i2v_test_random.pth", official)
    log = tmp_path_factory.mktemp("webui") / "webui.log"
    try:
        with webui_server.running(root, "I2V_WEBUI", 7861, log) as running:
            yield running
    finally:
        official.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def page(server):
    from webui_browser import Page, start_browser

    driver = start_browser()
    try:
        page = Page(driver, server.url)
        page.open()
        yield page
    finally:
        driver.quit()


def shoot(page, selector: str, name: str) -> None:
    folder = os.environ.get("I2V_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(selector, Path(folder) / name)


def test_page_loads_with_the_panel_and_no_console_errors(page):
    for tab in ("txt2img", "img2img"):
        assert page.exists(f"#{tab}_i2v_adapter_enable"), tab
        assert page.exists(f"#{tab}_send_to_i2v_adapter"), tab
    assert page.exists("#pnginfo_send_to_i2v_adapter")
    assert page.console_errors() == []


def test_weights_default_to_the_official_file_and_opening_does_not_hide_that_it_switches_on(page):
    assert page.script("return gradioApp().querySelector('#img2img_i2v_adapter_model input').value;") \
        == OFFICIAL_NAME
    assert not page.checked(f"{PANEL}-visible-checkbox")
    assert page.text("#img2img_i2v_adapter_status") == ""
    assert "switches it on" in page.text("#img2img_i2v_adapter_hint")


def test_txt2img_picture_sent_to_i2v_adapter_lands_in_img2img_and_the_panel(page):
    page.generate_txt2img(SIZE)

    shoot(page, "#image_buttons_txt2img", "send-to-buttons.png")
    page.click("#txt2img_send_to_i2v_adapter")
    page.wait_for(lambda: page.visible("#img2img_i2v_adapter_image"), 30, "the img2img tab did not open")
    page.wait_for(lambda: page.image_sources("#img2img_i2v_adapter_image"), 30, "no picture in the panel")
    page.wait_for(lambda: page.image_sources("#img2img_image"), 30, "no img2img picture")
    assert page.checked(f"{PANEL}-visible-checkbox"), "the panel was not switched on"
    assert page.script("return gradioApp().querySelector('#img2img_i2v_adapter_enable .label-wrap')"
                       ".classList.contains('open');"), "the panel was not opened"
    width = page.script("return gradioApp().querySelector('#img2img_width input[type=number]').value;")
    assert int(width) == SIZE, "the picture's size did not travel"
    assert "a cat" in page.script("return gradioApp().querySelector('#img2img_prompt textarea').value;")


def test_a_picture_sent_as_the_last_frame_lands_in_the_panels_last_frame_only(page):
    page.generate_txt2img(SIZE)
    before = page.image_sources("#img2img_image")
    page.click("#txt2img_send_to_i2v_adapter_last")
    page.wait_for(lambda: page.image_sources("#img2img_i2v_adapter_last_image"), 30, "no picture in the last frame")
    assert page.checked(f"{PANEL}-visible-checkbox"), "the panel was not switched on"
    assert page.image_sources("#img2img_image") == before, "the img2img picture changed"


def test_denoising_strength_shows_that_t0_replaces_it(page):
    assert page.script("return gradioApp().querySelector('#img2img_denoising_strength')"
                       ".classList.contains('i2v-adapter-replaced');")
    assert "t0 (1)" in page.text("#img2img_i2v_adapter_denoising_note")
    shoot(page, "#img2img_denoising_strength", "denoising-replaced.png")


def test_preset_shows_custom_after_t0_is_edited(page):
    page.click("#img2img_i2v_adapter_advanced .label-wrap")
    page.set_number("img2img_i2v_adapter_t0", 0.85)
    page.wait_for(lambda: page.script("return gradioApp().querySelector('#img2img_i2v_adapter_preset input')"
                                      ".value;") == "custom", 20, "the preset did not turn 'custom'")
    page.wait_for(lambda: "t0 (0.85)" in page.text("#img2img_i2v_adapter_denoising_note"), 10,
                  "the denoising note does not follow t0")


def test_preview_shows_two_seeded_thumbnails(page):
    page.set_number("img2img_seed", 5)
    page.click("#img2img_i2v_adapter_preview_button")
    page.wait_for(lambda: "timestep" in page.text("#img2img_i2v_adapter_preview_caption"), 120,
                  page.text("#img2img_i2v_adapter_preview_caption") or "no preview caption")
    first = (page.image_sources("#img2img_i2v_adapter_preview_prior"),
             page.image_sources("#img2img_i2v_adapter_preview_noised"))
    assert first[0] and first[1]
    caption = page.text("#img2img_i2v_adapter_preview_caption")
    assert f"{SIZE}x{SIZE}, seed 5" in caption and "timestep 849" in caption, caption
    print("\npreview:", caption)
    shoot(page, PANEL, "panel-img2img.png")
    shoot(page, "#img2img_i2v_adapter_preview", "preview-strip.png")


def test_every_control_has_a_hover_hint(page):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(page.driver).move_to_element(page.element("#img2img_i2v_adapter_t0 input[type=range]")).perform()
    hint = page.script("var el = document.elementFromPoint(arguments[0], arguments[1]);"
                       "while (el && !el.title) el = el.parentElement; return el ? el.title : '';",
                       *page.script("var r = gradioApp().querySelector('#img2img_i2v_adapter_t0 input[type=range]')"
                                    ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"))
    assert "replaces the denoising strength" in hint, hint
    for tab in ("txt2img", "img2img"):
        for name in CONTROLS:
            if name == "preview_button" and tab == "txt2img":
                continue
            title = page.script("var el = gradioApp().querySelector(arguments[0]); return el ? el.title : null;",
                                f"#{tab}_i2v_adapter_{name}")
            assert title, f"{tab} {name} has no hint"


def test_ip_adapter_weight_shows_only_when_the_option_is_on(page):
    assert not page.visible("#img2img_i2v_adapter_ip_adapter_weight")
    page.click("#img2img_i2v_adapter_ip_adapter input")
    page.wait_for(lambda: page.visible("#img2img_i2v_adapter_ip_adapter_weight"), 20, "weight did not appear")
    page.click("#img2img_i2v_adapter_ip_adapter input")
    page.wait_for(lambda: not page.visible("#img2img_i2v_adapter_ip_adapter_weight"), 20, "weight stayed")


def test_refusal_is_one_sentence_in_the_page_and_no_traceback_in_the_log(page, server):
    before = server.log_text()
    page.click("#img2img_generate")
    page.wait_for(lambda: "AnimateDiff" in page.text("#html_info_img2img") + page.text("#html_log_img2img"), 120,
                  "no refusal shown")
    page.wait_for(lambda: not page.visible("#img2img_interrupt"), 60, "img2img did not finish")
    shown = page.text("#html_info_img2img") + page.text("#html_log_img2img")
    assert "enable AnimateDiff" in shown, shown
    page.wait_for(lambda: page.exists("#html_log_img2img p.i2v-adapter-refusal"), 10, "refusal not marked")
    added = server.log_text()[len(before):]
    assert "Traceback" not in added and "Error completing request" not in added, added[-2000:]


def test_video_from_the_ui_with_animatediff(page, server):
    page.click("#img2img-ad-enable input")
    page.set_number("img2img-ad-video-length", FRAMES)
    page.set_number("img2img-ad-batch-size", FRAMES)
    page.wait_for(lambda: "Generate makes a video" in page.text("#img2img_i2v_adapter_status"), 10,
                  page.text("#img2img_i2v_adapter_status"))
    shoot(page, "#img2img_i2v_adapter_enable .label-wrap", "panel-title-on.png")
    page.click("#img2img_generate")
    page.wait_for(lambda: any(src.split("?")[0].endswith(".gif") for src in page.image_sources("#img2img_gallery")),
                  600, "no GIF in the img2img gallery")
    page.wait_for(lambda: not page.visible("#img2img_interrupt"), 120, "img2img did not finish")
    info = page.text("#html_info_img2img")
    assert "I2V-Adapter t0: 0.85" in info and f"I2V-Adapter model: {OFFICIAL_NAME}" in info, info
    assert re.search(r"AnimateDiff: .*video_length: 8", info), info
    print("\nvideo:", page.image_sources("#img2img_gallery")[0].split("/")[-1])


def test_the_batch_tab_makes_one_video_per_picture_named_after_it(page, tmp_path):
    """After the video above (AnimateDiff and the panel on): the Batch tab's folder of two pictures and an
    unreadable file gives two videos, each named after its picture, in the output folder."""
    from webui_requests import last_test_image, test_image

    pictures, out = tmp_path / "pictures", tmp_path / "out"
    pictures.mkdir()
    test_image().save(pictures / "first.png")
    last_test_image().save(pictures / "second.png")
    (pictures / "third.png").write_bytes(b"not a picture")
    page.script("Array.from(gradioApp().querySelectorAll('#mode_img2img .tab-nav button'))"
                ".find(b => b.textContent.trim() === 'Batch').click();")
    page.script("Array.from(gradioApp().querySelectorAll('#img2img_batch_source .tab-nav button'))"
                ".find(b => b.textContent.trim() === 'From directory').click();")
    page.set_value("#img2img_batch_input_dir textarea", str(pictures))
    page.set_value("#img2img_batch_output_dir textarea", str(out))
    page.click("#img2img_generate")
    page.wait_for(lambda: len(list(out.rglob("*.gif"))) >= 2, 900, "the Batch tab wrote no two videos")
    page.wait_for(lambda: not page.visible("#img2img_interrupt"), 120, "img2img did not finish")
    names = sorted(path.name for path in out.rglob("*.gif"))
    print(f"Batch tab: {names}")
    assert len(names) == 2 and "-first-" in names[0] and "-second-" in names[1]
    page.script("Array.from(gradioApp().querySelectorAll('#mode_img2img .tab-nav button'))"
                ".find(b => b.textContent.trim() === 'img2img').click();")


def test_pictures_uploaded_in_the_panel_make_one_video_each_and_interrupt_keeps_the_finished(page, server, tmp_path):
    """Three uploads, Interrupt pressed during the second video: the WebUI stops after that video (its 'Don't
    Interrupt in the middle' rule for a batch count), and the two finished videos are written, named after them."""
    import time

    from webui_requests import last_test_image, test_image

    names = ("upload_a", "upload_b", "upload_c")
    for name, picture in zip(names, (test_image(), last_test_image(), test_image().rotate(90))):
        picture.save(tmp_path / f"{name}.png")
    page.script("gradioApp().querySelector('#img2img_i2v_adapter_many .label-wrap').click();")
    page.element("#img2img_i2v_adapter_images input[type=file]").send_keys(
        "\n".join(str(tmp_path / f"{name}.png") for name in names))
    page.wait_for(lambda: "upload_c" in page.text("#img2img_i2v_adapter_images"), 30, "the uploads did not arrive")
    outputs = Path(os.environ["I2V_WEBUI_DIR"]) / "outputs"
    before = {path.name for path in outputs.rglob("*-upload_*.gif")}
    page.click("#img2img_generate")
    deadline = time.time() + 600
    while "video 2 of 3" not in (server.get("/sdapi/v1/progress?skip_current_image=true").json().get("textinfo") or ""):
        assert time.time() < deadline, "the second video never started"
        time.sleep(0.5)
    page.click("#img2img_interrupt")
    page.wait_for(lambda: not page.visible("#img2img_interrupt"), 600, "img2img did not finish")
    page.wait_for(lambda: {path.name for path in outputs.rglob("*-upload_*.gif")} - before, 60, "no video written")
    written = sorted({path.name for path in outputs.rglob("*-upload_*.gif")} - before)
    print(f"uploads, interrupted during video 2: {written}")
    assert [name for name in names if any(f"-{name}-" in file for file in written)] == ["upload_a", "upload_b"]


def test_png_info_sends_its_picture_to_the_panel(page, tmp_path):
    from webui_requests import test_image

    picture = tmp_path / "from-png-info.png"
    test_image().resize((96, 64)).save(picture)
    page.script("gradioApp().querySelectorAll('#tabs > .tab-nav > button').forEach(function(b) {"
                "if (b.textContent.trim() === 'PNG Info') b.click(); });")
    page.element("#pnginfo_image input[type=file]").send_keys(str(picture))
    page.wait_for(lambda: page.image_sources("#pnginfo_image"), 30, "PNG Info did not take the picture")
    before = page.image_sources("#img2img_i2v_adapter_image")
    page.click("#pnginfo_send_to_i2v_adapter")
    page.wait_for(lambda: page.visible("#img2img_i2v_adapter_image"), 30, "the img2img tab did not open")
    page.wait_for(lambda: page.image_sources("#img2img_i2v_adapter_image") not in ([], before), 30,
                  "the panel's picture did not change")
    width = page.script("return gradioApp().querySelector('#img2img_width input[type=number]').value;")
    assert int(width) == 96, "the picture's size did not travel"
    assert page.checked(f"{PANEL}-visible-checkbox")


def test_no_console_errors_during_the_session(page):
    errors = page.console_errors()
    print(f"\nconsole entries: {len(page.console)}, errors: {len(errors)}")
    assert errors == []
