"""ControlNet seen from outside: its units, its IP-Adapter models, its reference pass.

Two ControlNets exist: the sd-webui-controlnet extension on A1111 (``a1111.controlnet``, through its
public ``external_code`` module) and Forge's built-in one (``forge.controlnet``). Both speak the
small interface of :class:`ControlNetHost`; what to do with it (fill an IP-Adapter unit
with the image) is written once, in :func:`use_image_as_ip_adapter_content`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

log = logging.getLogger("i2v_adapter")


class ControlNetError(ValueError):
    """One sentence for the user."""


class ControlNetHost:
    """What the IP-Adapter option needs from a ControlNet; each ControlNet fills it in."""

    missing: str  # the sentence when this ControlNet is absent
    no_preprocessor: str  # the sentence when it cannot embed an image for IP-Adapter
    model_folders: str  # where its IP-Adapter models go

    def unit_range(self, p) -> tuple[int, int] | None:
        """Where ControlNet's units are in ``p.script_args``; None without ControlNet."""
        raise NotImplementedError

    def as_unit(self, value) -> Any:
        """A unit of this ControlNet from a request dict or a unit."""
        raise NotImplementedError

    def lacks_input(self, unit) -> bool:
        raise NotImplementedError

    def give_image(self, unit, pixels: np.ndarray) -> None:
        raise NotImplementedError

    def new_ip_adapter_unit(self, module: str, model: str, pixels: np.ndarray, weight: float) -> Any:
        raise NotImplementedError

    def models(self) -> list[str]:
        raise NotImplementedError

    def ip_adapter_preprocessor(self, model: str, sdxl: bool) -> str | None:
        raise NotImplementedError

    def convert_api_units(self, p) -> int:
        """Turn the request's unit dicts into units ready for AnimateDiff; returns how many were converted."""
        raise NotImplementedError

    def reference_write_pass(self, p) -> Callable[[], bool]:
        """A test that is true while reference-only runs its write pass (rows = the reference image)."""
        raise NotImplementedError


def replace_units(p, start: int, units: list) -> None:
    args = list(p.script_args)
    args[start:start + len(units)] = units
    p.script_args = args if isinstance(p.script_args, list) else tuple(args)


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


def use_image_as_ip_adapter_content(p, image, weight: float, controlnet: ControlNetHost) -> str:
    """Fill an IP-Adapter unit that has no image, or enable a free unit, with ``image``.

    Returns the model used. Raises ControlNetError with what to do when it cannot.
    """
    slots = controlnet.unit_range(p)
    if slots is None:
        raise ControlNetError(controlnet.missing)
    pixels = np.asarray(image.convert("RGB"))
    units = [controlnet.as_unit(unit) for unit in p.script_args[slots[0]:slots[1]]]
    for unit in units:
        if unit.enabled and _is_ip_adapter(str(unit.model)) and controlnet.lacks_input(unit):
            controlnet.give_image(unit, pixels)
            replace_units(p, slots[0], units)
            return str(unit.model)
    free = next((index for index, unit in enumerate(units) if not unit.enabled), None)
    if free is None:
        raise ControlNetError(f"I2V-Adapter: all {len(units)} ControlNet units are in use; free one for the "
                              "IP-Adapter or raise ControlNet's 'Multi-ControlNet: max models' setting.")
    sdxl = bool(getattr(p.sd_model, "is_sdxl", False))
    model = choose_ip_adapter_model(controlnet.models(), sdxl)
    if model is None:
        raise ControlNetError(
            f"I2V-Adapter: no {'SDXL' if sdxl else 'SD1.5'} IP-Adapter model in ControlNet's list: download "
            f"ip-adapter-plus_sd15.safetensors (h94/IP-Adapter on Hugging Face, folder models) into "
            f"{controlnet.model_folders} and press ControlNet's refresh button.")
    module = controlnet.ip_adapter_preprocessor(model, sdxl)
    if module is None:
        raise ControlNetError(controlnet.no_preprocessor)
    units[free] = controlnet.new_ip_adapter_unit(module, model, pixels, weight)
    replace_units(p, slots[0], units)
    log.info("I2V-Adapter: ControlNet unit %d: IP-Adapter %s with the image, weight %g", free, model, weight)
    return model


# -- the sd-webui-controlnet extension (A1111) ----------------------------------------------------------

# Preprocessors that embed the image for SD1.5 IP-Adapter models, in order of preference.
