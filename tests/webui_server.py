"""Start a real WebUI checkout with this extension linked in, and talk to its API (for the WebUI tests)."""
from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXTENSION_NAME = "sd-webui-i2v-adapter"
LAUNCH_FLAGS = [
    "--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
    "--no-download-sd-model", "--do-not-download-clip", "--use-cpu", "all", "--precision", "full",
    "--no-half", "--no-half-vae", "--api",
]


def link_extension(webui: Path) -> None:
    target = webui / "extensions" / EXTENSION_NAME
    if target.is_symlink() or target.exists():
        if target.resolve() != ROOT:
            raise RuntimeError(f"{target} exists and is not this checkout")
        return
    target.symlink_to(ROOT, target_is_directory=True)


class WebUI:
    def __init__(self, webui: Path, python: str, port: int, log_path: Path, extra_args: list[str]):
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                   PIP_NO_INDEX="1", PYTHONUNBUFFERED="1")
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([python, "launch.py", *LAUNCH_FLAGS, "--port", str(port), *extra_args],
                                        cwd=webui, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the WebUI exited with {self.process.returncode}; see {self.log.name}")
            try:
                response = requests.get(f"{self.url}/sdapi/v1/sd-models", timeout=5)
                if response.ok and isinstance(response.json(), list):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError("the WebUI API did not come up")

    def post(self, path: str, payload: dict) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=payload, timeout=1800)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_image(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text.split(",", 1)[-1])))


def python_for(webui: Path) -> str:
    return os.environ.get("I2V_WEBUI_PYTHON") or sys.executable
