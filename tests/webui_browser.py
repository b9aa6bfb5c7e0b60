"""A headless Chromium on a WebUI page (selenium), with the few gradio moves the browser tests need."""
from __future__ import annotations

import os
import shutil
import time

import pytest

ERROR_LEVELS = ("SEVERE",)


def chromium_paths() -> tuple[str, str]:
    browser = os.environ.get("CHROME_BIN") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium and chromedriver are not installed (Debian: chromium, chromium-driver)")
    return browser, driver


def start_browser(width: int = 1500, height: int = 1100):
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a driver
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Page:
    """The WebUI's gradio page in the browser."""

    def __init__(self, driver, url: str):
        self.driver = driver
        self.url = url
        self.console: list[dict] = []

    def open(self, timeout: float = 180) -> None:
        self.driver.get(self.url)
        # The WebUI calls its onUiLoaded callbacks once the whole page is there.
        self.wait_for(lambda: self.script("return typeof gradioApp === 'function' && "
                                          "!!gradioApp().querySelector('#txt2img_generate');"), timeout)
        time.sleep(2)

    def script(self, code: str, *args):
        return self.driver.execute_script(code, *args)

    def wait_for(self, condition, timeout: float = 60, message: str = "") -> object:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = condition()
            except Exception:  # the element may be re-rendered while we look
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s: {message}")

    def element(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def exists(self, selector: str) -> bool:
        return bool(self.script("return !!gradioApp().querySelector(arguments[0]);", selector))

    def click(self, selector: str) -> None:
        self.script("gradioApp().querySelector(arguments[0]).scrollIntoView({block: 'center'});", selector)
        self.script("gradioApp().querySelector(arguments[0]).click();", selector)

    def set_value(self, selector: str, value) -> None:
        """Type a value into an input or textarea the way the WebUI's own scripts do (updateInput)."""
        self.script("var el = gradioApp().querySelector(arguments[0]); el.value = arguments[1]; updateInput(el);",
                    selector, str(value))

    def set_number(self, elem_id: str, value) -> None:
        self.set_value(f"#{elem_id} input[type=number]", value)

    def checked(self, selector: str) -> bool:
        return bool(self.script("var el = gradioApp().querySelector(arguments[0]); return !!(el && el.checked);",
                                selector))

    def text(self, selector: str) -> str:
        return self.script("var el = gradioApp().querySelector(arguments[0]); return el ? el.textContent : '';",
                           selector) or ""

    def visible(self, selector: str) -> bool:
        return bool(self.script("var el = gradioApp().querySelector(arguments[0]);"
                                "return !!(el && el.offsetParent !== null);", selector))

    def image_sources(self, selector: str) -> list[str]:
        return self.script("return Array.from(gradioApp().querySelectorAll(arguments[0] + ' img'))"
                           ".map(function(img) { return img.src; });", selector) or []

    def collect_console(self) -> list[dict]:
        self.console.extend(self.driver.get_log("browser"))
        return self.console

    def console_errors(self) -> list[str]:
        """Errors in the page's console, less failed loads from other hosts (gradio 3 asks a CDN for
        iframeResizer; the test machines are offline)."""
        return [entry["message"] for entry in self.collect_console()
                if entry["level"] in ERROR_LEVELS and not self._offline_cdn_miss(entry["message"])]

    def _offline_cdn_miss(self, message: str) -> bool:
        url = message.split(" ", 1)[0]
        return ("Failed to load resource: net::ERR_NAME_NOT_RESOLVED" in message and url.startswith("http")
                and not url.startswith(self.url))

    def generate_txt2img(self, size: int, steps: int = 2, prompt: str = "a cat") -> None:
        """A small picture made in txt2img through the page, waited for until the generation has ended."""
        self.script("switch_to_txt2img();")
        self.set_value("#txt2img_prompt textarea", prompt)
        for name, value in (("txt2img_width", size), ("txt2img_height", size), ("txt2img_steps", steps)):
            self.set_number(name, value)
        self.click("#txt2img_generate")
        self.wait_for(lambda: self.image_sources("#txt2img_gallery"), 300, "no picture in the txt2img gallery")
        self.wait_for(lambda: not self.visible("#txt2img_interrupt"), 120, "txt2img did not finish")

    def screenshot(self, selector: str, path) -> None:
        self.script("gradioApp().querySelector(arguments[0]).scrollIntoView({block: 'start'});", selector)
        time.sleep(0.5)
        self.element(selector).screenshot(str(path))
