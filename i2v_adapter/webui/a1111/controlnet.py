"""sd-webui-controlnet on A1111, through its public ``external_code`` module, as a :class:`ControlNetHost`."""
from __future__ import annotations

from ..controlnet import ControlNetHost, replace_units

IP_ADAPTER_PREPROCESSORS = ("ip-adapter-auto", "ip-adapter_clip_sd15", "ip-adapter_clip_h")


def external_code():
    """ControlNet's public API module, or None when the extension is absent."""
    try:
        from scripts import external_code as module  # the name sd-webui-controlnet publishes it under
    except ImportError:
        return None
    return module if hasattr(module, "find_cn_script") and hasattr(module, "ControlNetUnit") else None


def _ready_for_animatediff(unit):
    # sd-webui-animatediff splits every enabled unit's batch_images; the UI sends "", the API default is None.
    if getattr(unit, "batch_images", "") is None:
        unit.batch_images = ""
    return unit


class ControlNetExtension(ControlNetHost):
    """sd-webui-controlnet, through its public ``external_code`` module."""

    missing = ("I2V-Adapter: 'Use the image as IP-Adapter content' needs the sd-webui-controlnet extension: "
               "install it, or turn the option off.")
    no_preprocessor = "I2V-Adapter: this ControlNet has no IP-Adapter preprocessor; update sd-webui-controlnet."
    model_folders = "models/ControlNet (or extensions/sd-webui-controlnet/models)"

    def unit_range(self, p):
        api = external_code()
        script = api.find_cn_script(getattr(p, "scripts", None)) if api is not None else None
        return None if script is None else (script.args_from, script.args_to)

    def as_unit(self, value):
        return external_code().to_processing_unit(value)

    def lacks_input(self, unit) -> bool:
        return unit.image is None and not unit.batch_images

    def give_image(self, unit, pixels):
        unit.image = pixels
        _ready_for_animatediff(unit)

    def new_ip_adapter_unit(self, module, model, pixels, weight):
        return external_code().ControlNetUnit(enabled=True, module=module, model=model, image=pixels, weight=weight,
                                              batch_images="")

    def models(self) -> list[str]:
        return external_code().get_models(update=True)

    def ip_adapter_preprocessor(self, model, sdxl):
        modules = external_code().get_modules()
        return next((name for name in IP_ADAPTER_PREPROCESSORS if name in modules), None)

    def convert_api_units(self, p) -> int:
        """sd-webui-animatediff (v2.0.1-a) reads the units before ControlNet does and, in API mode, fails on
        raw dicts, so AnimateDiff + ControlNet requests quietly lose their video. Units without an image but
        with ``batch_images`` become batch units, as AnimateDiff intends.
        """
        slots = self.unit_range(p)
        if slots is None:
            return 0
        api = external_code()
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
            replace_units(p, slots[0], units)
        return converted

    def reference_write_pass(self, p):
        api = external_code()
        script = api.find_cn_script(getattr(p, "scripts", None)) if api is not None else None
        if script is None:
            return lambda: False

        def writing() -> bool:
            machine = getattr(getattr(script, "latest_network", None), "attention_auto_machine", None)
            return getattr(machine, "name", None) == "Write"

        return writing


EXTENSION = ControlNetExtension()
