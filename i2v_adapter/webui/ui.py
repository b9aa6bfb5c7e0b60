"""The I2V-Adapter accordion (gradio 3.41 and 4), built from the parameter object's fields."""
from __future__ import annotations

from dataclasses import fields

import gradio as gr

from ..params import INFOTEXT_PREFIX, PRESETS, I2VParams
from . import model_files

HINT_IMG2IMG = (
    "Frame 0 of the video is this image; leave it empty to use the img2img image. "
    "Needs AnimateDiff on. t0 replaces the denoising strength."
)
HINT_TXT2IMG = (
    "Frame 0 of the video is this image. Needs AnimateDiff on. In txt2img the other frames start from "
    "pure noise: the Frame Similarity Prior (t0, p) works in img2img."
)
PRESET_HELP = "official: t0 1.0, p 0.5 (released code) · steady: t0 0.7, p 1.0 (least motion) · lively: t0 1.0, p 0.9 (most motion)"


def _knob(name: str):
    return next(f.metadata["knob"] for f in fields(I2VParams) if f.name == name)


def _slider(name: str, elem_prefix: str):
    knob, default = _knob(name), I2VParams.__dataclass_fields__[name].default
    return gr.Slider(minimum=knob.minimum, maximum=knob.maximum, step=knob.step, value=default,
                     label=knob.label, info=knob.help or None, elem_id=f"{elem_prefix}_{name}")


class Panel:
    """Components in the order of I2VParams' fields, plus what the WebUI needs for paste-back."""

    def __init__(self, is_img2img: bool, unsupported: str | None = None):
        """``unsupported``: one sentence saying why this WebUI cannot animate; shown instead of the hint."""
        from modules.ui_components import InputAccordion, ToolButton

        tab = "img2img" if is_img2img else "txt2img"
        prefix = f"{tab}_i2v_adapter"
        self.unsupported = unsupported
        if unsupported:
            # Opening an InputAccordion ticks it: here that would make the next plain generation fail.
            panel = gr.Accordion("I2V-Adapter", open=False, elem_id=prefix)
        else:
            panel = self.enable = InputAccordion(False, label="I2V-Adapter", elem_id=f"{prefix}_enable")
        with panel:
            gr.Markdown(unsupported or (HINT_IMG2IMG if is_img2img else HINT_TXT2IMG))
            if unsupported:
                self.enable = gr.Checkbox(value=False, visible=False, elem_id=f"{prefix}_enable")
            self.image = gr.Image(label="Image (frame 0)", type="pil", elem_id=f"{prefix}_image")
            with gr.Row():
                self.model = gr.Dropdown(choices=model_files.choices(), value=model_files.TRAINING_FREE_LABEL,
                                         label=_knob("model").label, elem_id=f"{prefix}_model")
                refresh = ToolButton(value="\U0001f504", elem_id=f"{prefix}_refresh")
            with gr.Row():
                preset = gr.Dropdown(choices=list(PRESETS), value="official", label="Preset", info=PRESET_HELP,
                                     elem_id=f"{prefix}_preset")
                self.scale = _slider("scale", prefix)
            self.ip_adapter = gr.Checkbox(value=False, label=_knob("ip_adapter").label, info=_knob("ip_adapter").help,
                                          elem_id=f"{prefix}_ip_adapter")
            with gr.Accordion("Advanced", open=False):
                self.t0 = _slider("t0", prefix)
                self.p = _slider("p", prefix)
                self.blur_sigma = _slider("blur_sigma", prefix)
                self.color_match = gr.Checkbox(value=True, label=_knob("color_match").label,
                                               elem_id=f"{prefix}_color_match")
                self.ip_adapter_weight = _slider("ip_adapter_weight", prefix)

        refresh.click(fn=lambda: gr.update(choices=model_files.choices()), inputs=[], outputs=[self.model])
        preset.change(fn=lambda name: (gr.update(value=PRESETS[name]["t0"]), gr.update(value=PRESETS[name]["p"])),
                      inputs=[preset], outputs=[self.t0, self.p])

    @property
    def values(self) -> list:
        return [getattr(self, name) for name in I2VParams.names()]

    @property
    def infotext_fields(self) -> list:
        if self.unsupported:
            return []  # pasting an I2V-Adapter infotext must not switch on what cannot run here
        entries = [(self.enable, lambda d: INFOTEXT_PREFIX in d),
                   (self.model, lambda d: gr.update(value=_pasted_model(d)))]
        for name in ("scale", "t0", "p", "blur_sigma", "color_match", "ip_adapter", "ip_adapter_weight"):
            entries.append((getattr(self, name), f"{INFOTEXT_PREFIX} {_knob(name).infotext}"))
        return entries


def _pasted_model(entries: dict) -> str:
    model = I2VParams.from_infotext(entries).model if INFOTEXT_PREFIX in entries else ""
    return model_files.to_choice(model if model_files.find(model) else "")
