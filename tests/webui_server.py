"""Start a real WebUI checkout with this extension linked in, and talk to its API (for the WebUI tests)."""
from __future__ import annotations

import base64
import io
import os
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
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

# Forge ignores A1111's CPU and precision switches (Forge Classic refuses them) and has its own; fp32 throughout.
_A1111_ONLY = ("--do-not-download-clip", "--use-cpu", "all", "--precision", "full")
FORGE_LAUNCH_FLAGS = [*(flag for flag in LAUNCH_FLAGS if flag not in _A1111_ONLY), "--always-cpu", "--all-in-fp32"]


def forge_cache_env(environ=os.environ) -> dict[str, str]:
    """Forge points the Hugging Face caches at its own models folder unless each is set: keep the user's."""
    home = environ.get("HF_HOME")
    if not home:
        return {}
    hub = environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))
    return {"HF_HUB_CACHE": hub, "HUGGINGFACE_HUB_CACHE": environ.get("HUGGINGFACE_HUB_CACHE", hub),
            "TRANSFORMERS_CACHE": environ.get("TRANSFORMERS_CACHE", hub)}


def link_extension(webui: Path) -> None:
    target = webui / "extensions" / EXTENSION_NAME
    if target.is_symlink() or target.exists():
        if target.resolve() != ROOT:
            raise RuntimeError(f"{target} exists and is not this checkout")
        return
    target.symlink_to(ROOT, target_is_directory=True)


class WebUI:
    def __init__(self, webui: Path, python: str, port: int, log_path: Path, extra_args: list[str],
                 launch_flags: list[str] = LAUNCH_FLAGS, extra_env: dict[str, str] | None = None):
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "PIP_NO_INDEX": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([python, "launch.py", *launch_flags, "--port", str(port), *extra_args],
                                        cwd=webui, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the WebUI exited with {self.process.returncode}; see {self.log.name}")
            try:
                response = requests.get(f"{self.url}/sdapi/v1/sd-models", timeout=5)
                # The new Forge answers before its scripts' default arguments exist: wait for the startup line too.
                if response.ok and isinstance(response.json(), list) and "Startup time" in self.log_text():
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError("the WebUI API did not come up")

    def post(self, path: str, payload: dict) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=payload, timeout=1800)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=60)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def _gradio_config(self) -> dict:
        return self.get("/config").json()

    def dropdown_choices(self, elem_id: str) -> list[str]:
        component = next(c for c in self._gradio_config()["components"] if c.get("props", {}).get("elem_id") == elem_id)
        return [choice[0] if isinstance(choice, list) else choice for choice in component["props"]["choices"]]

    def reload_ui(self, timeout: float = 600) -> None:
        """Press Settings > Reload UI (through gradio) and wait until the reloaded UI answers."""
        config = self._gradio_config()
        button = next(c["id"] for c in config["components"]
                      if c.get("props", {}).get("elem_id") == "settings_restart_gradio")
        fn_index = next(i for i, dependency in enumerate(config["dependencies"])
                        if any((t[0] if isinstance(t, list) else t) == button for t in dependency["targets"]))
        restarts = self.log_text().count("Restarting UI...")
        requests.post(f"{self.url}/run/predict", json={"fn_index": fn_index, "data": [], "session_hash": "i2vtest"},
                      timeout=60)
        deadline = time.time() + timeout
        while self.log_text().count("Restarting UI...") == restarts and time.time() < deadline:
            time.sleep(1)
        while self.log_text().rsplit("Restarting UI...", 1)[-1].count("Startup time") == 0 and time.time() < deadline:
            time.sleep(1)
        self.wait(max(1.0, deadline - time.time()))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


INSTALL_STEPS = ("--skip-prepare-environment", "--skip-install")


@contextmanager
def running(root: Path, settings: str, default_port: int, log_path: Path, forge: bool = False,
            run_install: bool = False):
    """The WebUI at ``root`` with this extension linked in, started as the ``<settings>_PYTHON``, ``_PORT`` and
    ``_ARGS`` variables say, ready for requests; stopped afterwards.

    ``run_install``: as a new user starts it, with the WebUI's preparation and every extension's install.py,
    and pip allowed to reach its index (``<settings>_REQS_FILE`` may name a requirements file the WebUI meets)."""
    link_extension(root)
    flags = FORGE_LAUNCH_FLAGS if forge else LAUNCH_FLAGS
    extra_env = forge_cache_env() if forge else {}
    if run_install:
        flags = [flag for flag in flags if flag not in INSTALL_STEPS]
        extra_env = {**extra_env, "PIP_NO_INDEX": "0"}
        if os.environ.get(f"{settings}_REQS_FILE"):
            extra_env["REQS_FILE"] = os.environ[f"{settings}_REQS_FILE"]
    server = WebUI(root, os.environ.get(f"{settings}_PYTHON") or sys.executable,
                   int(os.environ.get(f"{settings}_PORT", default_port)), log_path,
                   shlex.split(os.environ.get(f"{settings}_ARGS", "")), launch_flags=flags, extra_env=extra_env)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_image(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text.split(",", 1)[-1])))
