"""Forge 2: motion LoRA files (models/AnimateDiff/lora, or the folder set in Settings), merged into the
cached motion module for one generation and taken out again on every path (the undo goes on the
generation's undo list). Forge's own ``<lora:...>`` is for the picture model and never sees these."""
from __future__ import annotations

import logging
import os

from torch import nn

from ...motion.lora import MotionLora, MotionLoraError, check_fits, load_motion_lora, merge_motion_loras
from ..lifecycle import I2VAdapterError
from .motion import weight_files

log = logging.getLogger("i2v_adapter")

SETTING_KEY = "i2v_adapter_motion_lora_path"


def _files() -> dict[str, str]:
    return weight_files(os.path.join("AnimateDiff", "lora"), SETTING_KEY)


def names() -> list[str]:
    return sorted(_files())


def load_all(chosen, module: nn.Module, module_name: str) -> list[tuple[MotionLora, float]]:
    """The chosen (name, strength) LoRAs, read and checked against ``module``; I2VAdapterError naming the file."""
    if not chosen:
        return []
    files = _files()
    loras = []
    for name, strength in chosen:
        path = files.get(os.path.basename(name))
        if path is None:
            known = ", ".join(files) or "none found"
            raise I2VAdapterError(f"I2V-Adapter: no motion LoRA named '{name}' in models/AnimateDiff/lora "
                                  f"(available: {known}).")
        try:
            lora = load_motion_lora(path)
            check_fits(lora, module, module_name)
        except MotionLoraError as error:
            raise I2VAdapterError(f"I2V-Adapter: {str(error).replace(path, name)}.") from None
        loras.append((lora, strength))
    return loras


def apply(module: nn.Module, loras: list[tuple[MotionLora, float]]):
    """Merge ``loras`` into ``module``; returns the undo."""
    undo = merge_motion_loras(module, loras)
    log.info("I2V-Adapter: motion LoRA %s merged for this generation",
             ", ".join(f"{lora.name} at {strength:g}" for lora, strength in loras))
    return undo


def add_settings():
    from modules import shared

    shared.opts.add_option(SETTING_KEY, shared.OptionInfo(
        "", "Extra folder for AnimateDiff motion LoRAs (besides models/AnimateDiff/lora; Forge 2)",
        section=("i2v_adapter", "I2V-Adapter")))
