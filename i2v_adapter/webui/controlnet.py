"""sd-webui-controlnet, seen from outside: its units, its IP-Adapter models, its reference pass.

Everything goes through its public ``external_code`` module, found by trying to import it;
without ControlNet every function here is a no-op or explains what is missing.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

log = logging.getLogger("i2v_adapter")

IP_ADAPTER_DOWNLOAD = (
    "download ip-adapter-plus_sd15.safetensors (h94/IP-Adapter on Hugging Face, folder models) into "
    "models/ControlNet (or extensions/sd-webui-controlnet/models) and press ControlNet's refresh button"
)
# Preprocessors that embed the image for SD1.5 IP-Adapter models, in order of preference.
IP_ADAPTER_PREPROCESSORS = ("ip-adapter-auto", "ip-adapter_clip_sd15", "ip-adapter_clip_h")


class ControlNetError(ValueError):
    """One sentence for the user."""


def external_code():
    """ControlNet's public API module, or None when the extension is absent."""
    try:
        from scripts import external_code as module  # the name sd-webui-controlnet publishes it under
    except ImportError:
        return None
    return module if hasattr(module, "find_cn_script") and hasattr(module, "ControlNetUnit") else None


def _unit_slots(p, api) -> tuple[int, int] | None:
    script = api.find_cn_script(getattr(p, "scripts", None))
    if script is None:
        return None
    return script.args_from, script.args_to


def _replace_args(p, start: int, units: list) -> None:
    args = list(p.script_args)
    args[start:start + len(units)] = units
    p.script_args = args


def _ready_for_animatediff(unit):
    # sd-webui-animatediff splits every enabled unit's batch_images; the UI sends "", the API default is None.
    if getattr(unit, "batch_images", "") is None:
        unit.batch_images = ""
    return unit


def convert_api_units(p) -> int:
    """Turn the request's ControlNet unit dicts into units; returns how many were converted.

    sd-webui-animatediff (v2.0.1-a) reads the units before ControlNet does and, in API mode,
    fails on raw dicts, so AnimateDiff + ControlNet requests quietly lose their video. Units
    without an image but with ``batch_images`` become batch units, as AnimateDiff intends.
    """
    api = external_code()
    slots = _unit_slots(p, api) if api is not None else None
    if slots is None:
        return 0
    units = list(p.script_args[slots[0]:slots[1]])
    converted = 0
    for index, unit in enumerate(units):
        if not isinstance(unit, dict):
            continue
        units[index] = _ready_for_animatediff(api.to_processing_unit(unit))
        if unit.get("image") is None and unit.get("batch_images"):
            units[index].input_mode = type(units[index].input_mode)["BATCH"]
            units[index].batch_images = unit["batch_images"]
        converted += 1
    if converted:
        _replace_args(p, slots[0], units)
    return converted


def _is_ip_adapter(name: str) -> bool:
    name = name.lower()
    return "ip-adapter" in name or "ip_adapter" in name or "ipadapter" in name


def choose_ip_adapter_model(models: list[str], sdxl: bool) -> str | None:
    """The IP-Adapter model for a content image: the right base, no face models, plus preferred."""
    candidates = [model for model in models
                  if _is_ip_adapter(model) and not any(word in model.lower() for word in ("face", "pulid", "instantid"))
                  and ("xl" in model.lower()) == sdxl]
    candidates.sort(key=lambda model: ("plus" not in model.lower(), "vit-g" in model.lower(), model.lower()))
    return candidates[0] if candidates else None


def choose_ip_adapter_preprocessor(modules: list[str]) -> str | None:
    return next((name for name in IP_ADAPTER_PREPROCESSORS if name in modules), None)


def use_image_as_ip_adapter_content(p, image, weight: float) -> str:
    """Fill an IP-Adapter unit that has no image, or enable a free unit, with ``image``.

    Returns the model used. Raises ControlNetError with what to do when it cannot.
    """
    api = external_code()
    slots = _unit_slots(p, api) if api is not None else None
    if slots is None:
        raise ControlNetError("I2V-Adapter: 'Use the image as IP-Adapter content' needs the sd-webui-controlnet "
                              "extension: install it, or turn the option off.")
    pixels = np.asarray(image.convert("RGB"))
    units = [api.to_processing_unit(unit) for unit in p.script_args[slots[0]:slots[1]]]
    for unit in units:
        if unit.enabled and _is_ip_adapter(str(unit.model)) and unit.image is None and not unit.batch_images:
            unit.image = pixels
            _ready_for_animatediff(unit)
            _replace_args(p, slots[0], units)
            return str(unit.model)
    free = next((index for index, unit in enumerate(units) if not unit.enabled), None)
    if free is None:
        raise ControlNetError(f"I2V-Adapter: all {len(units)} ControlNet units are in use; free one for the "
                              "IP-Adapter or raise ControlNet's 'Multi-ControlNet: max models' setting.")
    sdxl = bool(getattr(p.sd_model, "is_sdxl", False))
    model = choose_ip_adapter_model(api.get_models(update=True), sdxl)
    if model is None:
        raise ControlNetError(f"I2V-Adapter: no {'SDXL' if sdxl else 'SD1.5'} IP-Adapter model in ControlNet's "
                              f"list: {IP_ADAPTER_DOWNLOAD}.")
    module = choose_ip_adapter_preprocessor(api.get_modules())
    if module is None:
        raise ControlNetError("I2V-Adapter: this ControlNet has no IP-Adapter preprocessor; update sd-webui-controlnet.")
    units[free] = api.ControlNetUnit(enabled=True, module=module, model=model, image=pixels, weight=weight,
                                     batch_images="")
    _replace_args(p, slots[0], units)
    log.info("I2V-Adapter: ControlNet unit %d: IP-Adapter %s with the image, weight %g", free, model, weight)
    return model


def reference_write_pass(p) -> Callable[[], bool]:
    """A test that is true while ControlNet runs its reference write pass (rows = the reference image)."""
    api = external_code()
    script = api.find_cn_script(getattr(p, "scripts", None)) if api is not None else None
    if script is None:
        return lambda: False

    def writing() -> bool:
        machine = getattr(getattr(script, "latest_network", None), "attention_auto_machine", None)
        return getattr(machine, "name", None) == "Write"

    return writing
