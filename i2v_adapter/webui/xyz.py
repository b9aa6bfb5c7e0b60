"""X/Y/Z plot axes for t0, p, scale and loop (and on Forge 2 the motion LoRAs' strength), and whether a generation
is one cell of such a plot."""
from __future__ import annotations

from dataclasses import replace

from ..params import to_bool

AXES = {"t0": "[I2V-Adapter] t0", "p": "[I2V-Adapter] p", "scale": "[I2V-Adapter] scale"}
LOOP = "loop"
SWITCH_AXES = {LOOP: "[I2V-Adapter] loop"}  # on/off values
MOTION_LORA_STRENGTH = "motion_lora_strength"
VIDEO_QUALITY = "quality"
FORGE2_AXES = {MOTION_LORA_STRENGTH: "[I2V-Adapter] motion LoRA strength", VIDEO_QUALITY: "[I2V-Adapter] video quality"}
ATTRIBUTE = "i2v_adapter_overrides"


def overrides(p) -> dict:
    """The I2VParams fields a plot cell sets."""
    return {name: value for name, value in getattr(p, ATTRIBUTE, {}).items() if name in AXES or name in SWITCH_AXES}


def motion_overrides(p, motion):
    """``motion`` with what a plot cell sets: the strength of every chosen motion LoRA, the video quality."""
    cell = getattr(p, ATTRIBUTE, {})
    if motion is None:
        return motion
    if MOTION_LORA_STRENGTH in cell:
        strength = cell[MOTION_LORA_STRENGTH]
        motion = replace(motion, motion_lora=tuple((name, strength) for name, _ in motion.motion_lora))
    if VIDEO_QUALITY in cell:
        motion = replace(motion, quality=int(round(cell[VIDEO_QUALITY])))
    return motion


def _apply(name: str):
    def apply(p, value, _values):
        setattr(p, ATTRIBUTE, {**getattr(p, ATTRIBUTE, {}), name: float(value)})  # every axis of the cell kept

    return apply


def _apply_switch(name: str):
    def apply(p, value, _values):
        setattr(p, ATTRIBUTE, {**getattr(p, ATTRIBUTE, {}), name: to_bool(name, value)})

    return apply


def add_axes(forge2: bool = False):
    from modules import scripts

    xyz_grid = next((data.module for data in scripts.scripts_data if data.script_class.__module__ == "xyz_grid.py"), None)
    if xyz_grid is None:
        return
    known = {option.label for option in xyz_grid.axis_options}
    for name, label in {**AXES, **(FORGE2_AXES if forge2 else {})}.items():
        if label not in known:
            xyz_grid.axis_options.append(xyz_grid.AxisOption(label, float, _apply(name)))
    for name, label in SWITCH_AXES.items():
        if label not in known:
            xyz_grid.axis_options.append(xyz_grid.AxisOption(label, str, _apply_switch(name),
                                                             choices=lambda: ["False", "True"]))


def in_xyz_plot(p) -> bool:
    """Whether ``p`` runs as a cell of the X/Y/Z plot script, which builds its grid from each cell's first picture.

    The WebUI keeps the chosen script's number (1-based; 0: none) first in ``p.script_args``.
    """
    try:
        chosen = int(p.script_args[0])
        script = p.scripts.selectable_scripts[chosen - 1] if chosen > 0 else None
    except (AttributeError, IndexError, TypeError, ValueError):
        return False
    return script is not None and script.title().lower() == "x/y/z plot"
