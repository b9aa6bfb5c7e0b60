"""A throwaway WebUI extension that raises inside sampling, to prove cleanup after an exception.

The WebUI tests write it into the WebUI's extensions folder for the duration of a test run and remove it
afterwards. It does nothing unless the prompt contains MARKER.
"""
from __future__ import annotations

import shutil
from pathlib import Path

NAME = "i2v-adapter-test-fault"
MARKER = "raise-inside-sampling"
SCRIPT = f'''
from modules import script_callbacks, shared


def fail_next_unet_call(params):
    # Callback exceptions are caught by the WebUI; one raised by the UNet itself ends the generation.
    p = getattr(params.denoiser, "p", None)
    if p is None or "{MARKER}" not in str(p.prompt) or getattr(params.denoiser, "step", 0) < 1:
        return
    unet = (shared.sd_model.model if hasattr(shared.sd_model, "model") else shared.sd_model.forge_objects.unet.model).diffusion_model

    def fail(module, args):
        handle.remove()
        raise RuntimeError("fault injected by the I2V-Adapter tests")

    handle = unet.register_forward_pre_hook(fail)


script_callbacks.on_cfg_denoiser(fail_next_unet_call)
'''

def install(webui: Path) -> Path:
    folder = webui / "extensions" / NAME
    (folder / "scripts").mkdir(parents=True, exist_ok=True)
    (folder / "scripts" / "fault.py").write_text(SCRIPT)
    return folder


def remove(webui: Path) -> None:
    shutil.rmtree(webui / "extensions" / NAME, ignore_errors=True)
