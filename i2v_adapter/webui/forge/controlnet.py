"""Forge's built-in ControlNet (``sd_forge_controlnet``), seen from outside, for the IP-Adapter option,
API requests with control pictures, and Forge's reference-only.

Its modules (``lib_controlnet``) are imported only when used: they exist only inside a running Forge.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..controlnet import ControlNetError, ControlNetHost, replace_units

# Forge's CLIP vision preprocessors for IP-Adapter: bigG only for SDXL models made for it.
CLIP_H, CLIP_BIG_G = "CLIP-ViT-H (IPAdapter)", "CLIP-ViT-bigG (IPAdapter)"
REFERENCE_PREPROCESSORS = ("reference_only", "reference_adain", "reference_adain+attn")


def controlnet_script(p):
    for script in getattr(getattr(p, "scripts", None), "alwayson_scripts", []):
        if script.title().lower() == "controlnet":
            return script
    return None


def _external_code():
    from lib_controlnet import external_code

    return external_code


def takes_folders() -> bool:
    """Whether this Forge's ControlNet reads a folder of pictures per unit; Forge Classic's takes one picture."""
    try:
        from modules_forge.forge_version import version
    except ImportError:
        return True
    return version != "classic"


NO_FOLDERS = ("I2V-Adapter: Forge Classic's ControlNet takes one picture per unit, not a folder or video: give the "
              "unit one picture (it then steers every frame), or use classic Forge or reForge for a control video.")


def as_unit(value):
    """A unit of Forge's ControlNet from a request dict (or the unit itself)."""
    return _unit_from_request(value) if isinstance(value, dict) else value


def _unit_from_request(values: dict):
    """A unit from an API dict, read the way the A1111 ControlNet reads it, so that one request works on both.

    A dict without an image but with a folder (``batch_images`` on A1111, ``batch_image_dir`` on Forge)
    becomes a batch unit: one control picture per frame, as AnimateDiff intends. A1111's "none"
    preprocessor is Forge's "None" (Forge skips a unit whose preprocessor it does not know).
    """
    api = _external_code()
    values = dict(values)
    folder = values.pop("batch_images", None) or values.get("batch_image_dir")
    if str(values.get("module", "")).lower() == "none":
        values["module"] = "None"
    unit = api.ControlNetUnit.from_dict(values)
    if unit.image is None and folder:
        unit.input_mode = api.InputMode.BATCH
        unit.batch_image_dir = folder
    return unit


class BuiltinControlNet(ControlNetHost):
    missing = ("I2V-Adapter: 'Use the image as IP-Adapter content' needs Forge's built-in ControlNet "
               "(sd_forge_controlnet), which is turned off: turn it on in the Extensions tab, or turn the option off.")
    no_preprocessor = ("I2V-Adapter: Forge's ControlNet has no CLIP-ViT IP-Adapter preprocessor: turn on the "
                       "built-in sd_forge_ipadapter in the Extensions tab.")
    model_folders = "models/ControlNet"

    def unit_range(self, p):
        script = controlnet_script(p)
        return None if script is None else (script.args_from, script.args_to)

    def as_unit(self, value):
        return as_unit(value)

    def lacks_input(self, unit) -> bool:
        return unit.image is None and unit.input_mode.name == "SIMPLE"

    def give_image(self, unit, pixels):
        # Forge 2's unit holds the picture itself (its page passes a drawn foreground apart, as image_fg);
        # the gradio 3 Forges' holds the sketch tool's pair. Forge 2 reads the pair as a picture and fails.
        if hasattr(unit, "image_fg"):
            unit.image = pixels
        else:
            unit.image = {"image": pixels, "mask": np.zeros_like(pixels)}

    def new_ip_adapter_unit(self, module, model, pixels, weight):
        unit = _external_code().ControlNetUnit(enabled=True, module=module, model=model, weight=weight)
        self.give_image(unit, pixels)
        return unit

    def models(self) -> list[str]:
        from lib_controlnet import global_state

        global_state.update_controlnet_filenames()
        return [name for name in global_state.get_all_controlnet_names() if name != "None"]

    def ip_adapter_preprocessor(self, model, sdxl):
        from lib_controlnet import global_state

        wanted = CLIP_BIG_G if sdxl and "vit-h" not in model.lower() else CLIP_H
        return wanted if wanted in global_state.get_all_preprocessor_names() else None

    def convert_api_units(self, p) -> int:
        converted = _convert_unit_dicts(p)
        # Forge Classic's ControlNet would log an error per unit and generate without it.
        if not takes_folders() and any(unit.input_mode.name != "SIMPLE" for unit in enabled_units(p)):
            raise ControlNetError(NO_FOLDERS)
        return converted

    def reference_write_pass(self, p) -> Callable[[], bool]:
        try:
            from modules_forge.shared import supported_preprocessors
        except ImportError:
            return lambda: False
        references = [supported_preprocessors[name] for name in REFERENCE_PREPROCESSORS
                      if name in supported_preprocessors]
        # Forge's reference preprocessors raise this flag while they run the reference image through the UNet.
        return lambda: any(getattr(reference, "is_recording_style", False) for reference in references)


def _convert_unit_dicts(p) -> int:
    script = controlnet_script(p)
    if script is None:
        return 0
    values = p.script_args[script.args_from:script.args_to]
    converted = sum(isinstance(value, dict) for value in values)
    if converted:
        replace_units(p, script.args_from, [as_unit(value) for value in values])
    return converted


def enabled_units(p) -> list:
    """The enabled units of Forge's ControlNet in ``p``, request dicts turned into units first."""
    script = controlnet_script(p)
    if script is None:
        return []
    _convert_unit_dicts(p)
    return [unit for unit in p.script_args[script.args_from:script.args_to] if getattr(unit, "enabled", False)]


BUILTIN = BuiltinControlNet()
