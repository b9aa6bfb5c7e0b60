"""Forge 2 only: the panel's motion section (there is no AnimateDiff panel on this Forge to set the video).

Its values follow the panel's, in the order of MotionParams' fields.
"""
from __future__ import annotations

from dataclasses import fields

import gradio as gr

from ..params import INFOTEXT_PREFIX
from . import forge2_motion
from .forge2_params import FORMATS, MotionParams, formats_from_infotext

HINT = ("This Forge has no AnimateDiff: I2V-Adapter brings its own. Choose an AnimateDiff SD1.5 motion module "
        "(v1, v2 or v3) from models/AnimateDiff; videos longer than the context length are made in overlapping windows.")


def _slider(name: str, prefix: str):
    knob, default = MotionParams.knob(name), MotionParams.__dataclass_fields__[name].default
    return gr.Slider(minimum=knob.minimum, maximum=knob.maximum, step=knob.step, value=default, label=knob.label,
                     info=knob.help or None, elem_id=f"{prefix}_{name}")


class MotionSection:
    def __init__(self, is_img2img: bool):
        from modules.ui_components import ToolButton

        prefix = f"{'img2img' if is_img2img else 'txt2img'}_i2v_adapter"
        with gr.Group(elem_id=f"{prefix}_motion"):
            gr.Markdown(HINT)
            with gr.Row():
                choices = forge2_motion.names()
                self.motion_module = gr.Dropdown(choices=choices, value=choices[0] if choices else None,
                                                 label=MotionParams.knob("motion_module").label,
                                                 info=MotionParams.knob("motion_module").help,
                                                 allow_custom_value=True, elem_id=f"{prefix}_motion_module")
                refresh = ToolButton(value="\U0001f504", elem_id=f"{prefix}_motion_refresh")
            with gr.Row():
                self.frames = _slider("frames", prefix)
                self.fps = _slider("fps", prefix)
            with gr.Row():
                self.context_length = _slider("context_length", prefix)
                self.context_overlap = _slider("context_overlap", prefix)
            self.formats = gr.CheckboxGroup(choices=list(FORMATS), value=list(MotionParams().formats),
                                            label=MotionParams.knob("formats").label, elem_id=f"{prefix}_formats")
        refresh.click(fn=lambda: gr.update(choices=forge2_motion.names()), inputs=[], outputs=[self.motion_module])

    @property
    def values(self) -> list:
        return [getattr(self, name) for name in MotionParams.names()]

    @property
    def infotext_fields(self) -> list:
        entries = []
        for f in fields(MotionParams):
            key = f.metadata["knob"].infotext
            if f.name == "formats":  # a list for the checkboxes, not the infotext's text
                entries.append((self.formats, formats_from_infotext))
            elif key is not None:
                entries.append((getattr(self, f.name), f"{INFOTEXT_PREFIX} {key}"))
        return entries
