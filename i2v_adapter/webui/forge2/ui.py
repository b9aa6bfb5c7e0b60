"""Forge 2 only: the panel's motion section (there is no AnimateDiff panel on this Forge to set the video).

Its values follow the panel's, in the order of MotionParams' fields. The choice between a video from a
picture and motion only goes first in the panel (:meth:`MotionSection.source`); the rest below the panel's own.
"""
from __future__ import annotations

from dataclasses import fields

import gradio as gr

from ...params import INFOTEXT_PREFIX
from . import motion as motion_modules
from . import motion_lora
from .params import (FORMATS, FROM_A_PICTURE, LOOP_LABELS, MOTION_ONLY, MotionParams, formats_from_infotext,
                            motion_lora_text)

HINT = ("This Forge has no AnimateDiff: I2V-Adapter brings its own. Choose a motion module from models/AnimateDiff "
        "made for the loaded checkpoint: AnimateDiff v1, v2, v3 or AnimateLCM for SD1.5, AnimateDiff-SDXL or HotShot-XL "
        "for SDXL; videos longer than the context length are made in overlapping windows.")


def _window_for(name: str, context_length: float):
    """HotShot-XL learnt motion on 8-frame clips: choosing it brings a longer context length down to 8."""
    window = motion_modules.trained_window(name)
    return gr.update(value=window) if window and context_length > window else gr.update()


def _slider(name: str, prefix: str):
    knob, default = MotionParams.knob(name), MotionParams.__dataclass_fields__[name].default
    return gr.Slider(minimum=knob.minimum, maximum=knob.maximum, step=knob.step, value=default, label=knob.label,
                     info=knob.help or None, elem_id=f"{prefix}_{name}")


def _source_label(motion_only: bool) -> str:
    return MOTION_ONLY if motion_only else FROM_A_PICTURE


def _pasted(name: str, to_value):
    """An infotext reader for ``name`` that gives the control's value (None: leave the control as it is)."""
    key = f"{INFOTEXT_PREFIX} {MotionParams.knob(name).infotext}"

    def read(entries: dict):
        if key not in entries:
            return None
        try:
            return to_value(getattr(MotionParams.from_dict({name: entries[key]}), name))
        except ValueError:
            return None

    return read


def _pasted_source(entries: dict):
    """The source an infotext names; an I2V-Adapter infotext from before this choice was a picture's."""
    if INFOTEXT_PREFIX not in entries:
        return None
    return _source_label(entries.get(f"{INFOTEXT_PREFIX} {MotionParams.knob('motion_only').infotext}") == "True")


def _add_lora(current: str, chosen: str | None) -> tuple:
    """The picker's file appended to the text as name:1 (once), and the picker emptied again."""
    if not chosen:
        return gr.update(), gr.update()
    names = [item.split(":")[0].strip() for item in (current or "").split(",") if item.strip()]
    if chosen in names:
        return gr.update(), gr.update(value=None)
    text = ", ".join(part for part in ((current or "").strip(" ,"), f"{chosen}:1") if part)
    return gr.update(value=text), gr.update(value=None)


class MotionSection:
    def __init__(self, is_img2img: bool):
        self.prefix = f"{'img2img' if is_img2img else 'txt2img'}_i2v_adapter"
        self.motion_only = None

    def source(self):
        """The radio "from a picture" / "motion only", built first inside the panel."""
        self.motion_only = gr.Radio(choices=[FROM_A_PICTURE, MOTION_ONLY], value=FROM_A_PICTURE,
                                    label=MotionParams.knob("motion_only").label, elem_id=f"{self.prefix}_motion_only")
        return self.motion_only

    def build(self, picture_parts: list) -> None:
        from modules.ui_components import ToolButton

        prefix = self.prefix
        with gr.Group(elem_id=f"{prefix}_motion"):
            gr.Markdown(HINT)
            with gr.Row():
                choices = motion_modules.names()
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
            self.closed_loop = gr.Dropdown(choices=list(LOOP_LABELS.values()), value=LOOP_LABELS["off"],
                                           label=MotionParams.knob("closed_loop").label,
                                           info=MotionParams.knob("closed_loop").help, elem_id=f"{prefix}_closed_loop")
            with gr.Row():
                self.motion_lora = gr.Textbox(value="", label=MotionParams.knob("motion_lora").label,
                                              placeholder="v2_lora_ZoomIn.ckpt:0.8, v2_lora_PanLeft.ckpt:0.5",
                                              elem_id=f"{prefix}_motion_lora", scale=3)
                self.lora_picker = gr.Dropdown(choices=motion_lora.names(), value=None, label="Add a motion LoRA",
                                               elem_id=f"{prefix}_motion_lora_picker", scale=2)
                lora_refresh = ToolButton(value="\U0001f504", elem_id=f"{prefix}_motion_lora_refresh")
            self.formats = gr.CheckboxGroup(choices=list(FORMATS), value=list(MotionParams().formats),
                                            label=MotionParams.knob("formats").label, elem_id=f"{prefix}_formats")
            with gr.Row():
                self.quality = _slider("quality", prefix)
                self.webp_lossless = gr.Checkbox(value=False, label=MotionParams.knob("webp_lossless").label,
                                                 elem_id=f"{prefix}_webp_lossless")
        refresh.click(fn=lambda: gr.update(choices=motion_modules.names()), inputs=[], outputs=[self.motion_module])
        self.motion_module.change(fn=_window_for, inputs=[self.motion_module, self.context_length],
                                  outputs=[self.context_length], show_progress=False)
        lora_refresh.click(fn=lambda: gr.update(choices=motion_lora.names()), inputs=[],
                           outputs=[self.lora_picker])
        self.lora_picker.change(fn=_add_lora, inputs=[self.motion_lora, self.lora_picker],
                                outputs=[self.motion_lora, self.lora_picker], show_progress=False)
        self.motion_only.change(fn=lambda source: [gr.update(visible=source != MOTION_ONLY)] * len(picture_parts),
                                inputs=[self.motion_only], outputs=picture_parts, show_progress=False)

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
            elif f.name == "motion_only":
                entries.append((self.motion_only, _pasted_source))
            elif f.name == "closed_loop":
                entries.append((self.closed_loop, _pasted("closed_loop", LOOP_LABELS.get)))
            elif f.name == "motion_lora":
                entries.append((self.motion_lora, _pasted("motion_lora", motion_lora_text)))
            elif key is not None:
                entries.append((getattr(self, f.name), f"{INFOTEXT_PREFIX} {key}"))
        return entries
