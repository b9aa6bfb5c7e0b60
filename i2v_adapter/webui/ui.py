"""The I2V-Adapter accordion (gradio 3.41 and 4), built from the parameter object's fields.

Hover hints, the header's on/off status and the denoising-strength link live in javascript/; the layout
of the preview strip in style.css. Every element id starts with ``<tab>_i2v_adapter``.
"""
from __future__ import annotations

from dataclasses import fields

import gradio as gr

from ..params import INFOTEXT_PREFIX, PRESETS, I2VParams
from . import model_files, page, preview, send_to

HINT_IMG2IMG = (
    "Frame 0 of the video is the img2img picture, or the picture you drop here. Opening this panel switches "
    "it on (the tick in its title); it needs AnimateDiff on, and while it is on t0 replaces the denoising strength."
)
HINT_TXT2IMG = (
    "Frame 0 of the video is this picture. Opening this panel switches it on (the tick in its title); it needs "
    "AnimateDiff on. In txt2img the other frames start from pure noise: the prior (t0, p) works in img2img."
)
HINT_FORGE2 = (
    "Frame 0 of the video is the img2img picture, or the picture you drop here. Opening this panel switches "
    "it on (the tick in its title); the motion module is chosen below, and in img2img t0 replaces the "
    "denoising strength."
)
CUSTOM_PRESET = "custom"
OFFICIAL_WEIGHTS = "i2v_module.pth"
IMG2IMG_IMAGE_HEIGHT = 160
THUMBNAIL_HEIGHT = 144


def _knob(name: str):
    return next(f.metadata["knob"] for f in fields(I2VParams) if f.name == name)


def _default(name: str):
    return I2VParams.__dataclass_fields__[name].default


def _slider(name: str, elem_prefix: str, **kwargs):
    knob = _knob(name)
    return gr.Slider(minimum=knob.minimum, maximum=knob.maximum, step=knob.step, value=_default(name),
                     label=knob.label, info=knob.help or None, elem_id=f"{elem_prefix}_{name}", **kwargs)


def _hint(is_img2img: bool) -> str:
    from . import host

    if host.host() == host.NEW_FORGE:  # its own motion modules, not AnimateDiff's panel
        return HINT_FORGE2
    return HINT_IMG2IMG if is_img2img else HINT_TXT2IMG


def default_weights_choice() -> str:
    """The official adapter when it is installed, else training-free."""
    names = model_files.names()
    official = [name for name in names if name.replace("\\", "/").split("/")[-1] == OFFICIAL_WEIGHTS]
    return official[0] if official else model_files.TRAINING_FREE_LABEL


def preset_name(t0: float, p: float) -> str:
    """The preset whose t0 and p these are, or "custom"."""
    for name, values in PRESETS.items():
        if abs(float(t0) - values["t0"]) < 1e-6 and abs(float(p) - values["p"]) < 1e-6:
            return name
    return CUSTOM_PRESET


def preset_values(name: str):
    if name not in PRESETS:
        return gr.update(), gr.update()
    return gr.update(value=PRESETS[name]["t0"]), gr.update(value=PRESETS[name]["p"])


class Panel:
    """Components in the order of I2VParams' fields, plus what the WebUI needs for paste-back."""

    def __init__(self, is_img2img: bool, unsupported: str | None = None, header=None):
        """``unsupported``: one sentence saying why this WebUI cannot animate; shown instead of the hint.
        ``header``: builds controls that go first inside the panel (Forge 2: from a picture or motion only)."""
        from modules.ui_components import InputAccordion

        self.is_img2img = is_img2img
        self.prefix = prefix = f"{'img2img' if is_img2img else 'txt2img'}_i2v_adapter"
        self.unsupported = unsupported
        if unsupported:
            # Opening an InputAccordion ticks it: here that would make the next plain generation fail.
            panel = gr.Accordion("I2V-Adapter", open=False, elem_id=prefix)
        else:
            panel = self.enable = InputAccordion(False, label="I2V-Adapter", elem_id=f"{prefix}_enable")
            with self.enable.extra():
                gr.HTML("", elem_id=f"{prefix}_status")  # "on: ..." written by javascript/
        with panel:
            self.hint = gr.Markdown(unsupported or _hint(is_img2img), elem_id=f"{prefix}_hint")
            if unsupported:
                self.enable = gr.Checkbox(value=False, visible=False, elem_id=f"{prefix}_enable")
            self.header = header() if header is not None else None
            self._image_and_weights()
            with gr.Row(elem_id=f"{prefix}_ip_adapter_row") as self.ip_adapter_row:
                self.ip_adapter = gr.Checkbox(value=False, label=_knob("ip_adapter").label, min_width=300,
                                              elem_id=f"{prefix}_ip_adapter")
                self.ip_adapter_weight = _slider("ip_adapter_weight", prefix, visible=False)
            self._many_pictures()
            with gr.Accordion("Advanced", open=False, elem_id=f"{prefix}_advanced") as self.advanced:
                self.t0 = _slider("t0", prefix)
                self.p = _slider("p", prefix)
                self.blur_sigma = _slider("blur_sigma", prefix)
                self.color_match = gr.Checkbox(value=True, label=_knob("color_match").label,
                                               elem_id=f"{prefix}_color_match")
            self._preview_strip()
        self._connect()

    def _image_and_weights(self) -> None:
        from modules.ui_components import ToolButton

        prefix = self.prefix
        with gr.Row(elem_id=f"{prefix}_main_row") as self.main_row:
            # img2img: the picture is optional (the img2img picture is the default), so it stays small.
            image_height = {"height": IMG2IMG_IMAGE_HEIGHT} if self.is_img2img else {}
            with gr.Column(scale=1, min_width=160, elem_id=f"{prefix}_image_column"):
                self.image = gr.Image(label="Image (frame 0)", type="pil", elem_id=f"{prefix}_image", **image_height)
            with gr.Column(scale=1, min_width=160, elem_id=f"{prefix}_last_image_column"):
                self.last_image = gr.Image(label="Last frame (optional)", type="pil", elem_id=f"{prefix}_last_image",
                                           **image_height)
            with gr.Column(scale=3 if self.is_img2img else 2, min_width=240):
                with gr.Row():
                    self.model = gr.Dropdown(choices=model_files.choices(), value=default_weights_choice(),
                                             label=_knob("model").label, elem_id=f"{prefix}_model")
                    # Computed at every start (the official file may arrive later), not frozen in ui-config.json.
                    self.model.do_not_save_to_config = True
                    self.refresh = ToolButton(value="\U0001f504", elem_id=f"{prefix}_refresh")
                with gr.Row():
                    self.preset = gr.Dropdown(choices=[*PRESETS, CUSTOM_PRESET], value="official", label="Preset",
                                              elem_id=f"{prefix}_preset")
                    self.scale = _slider("scale", prefix)
                self.loop = gr.Checkbox(value=False, label="Loop (the video ends on the first picture)",
                                        elem_id=f"{prefix}_loop")

    def _many_pictures(self) -> None:
        """Several pictures, one video each: uploads, or a folder on the server where the WebUI allows that."""
        from modules import shared

        prefix = self.prefix
        with gr.Accordion("Many pictures: one video each", open=False, elem_id=f"{prefix}_many") as self.many:
            self.images = gr.File(file_count="multiple", file_types=["image"], label=_knob("images").label,
                                  elem_id=f"{prefix}_images")
            folders_allowed = not getattr(shared.cmd_opts, "hide_ui_dir_config", False)
            self.folder = gr.Textbox(value="", label=_knob("folder").label, visible=folders_allowed,
                                     placeholder="a folder of pictures on the server", elem_id=f"{prefix}_folder")

    def _preview_strip(self) -> None:
        prefix = self.prefix
        if not self.is_img2img:
            self.preview_note = gr.HTML(preview.caption_html(preview.TXT2IMG_NOTE), elem_id=f"{prefix}_preview_note")
            self.preview_button = None
            return
        with gr.Row(elem_id=f"{prefix}_preview", variant="compact") as self.preview_row:
            self.preview_button = gr.Button("Preview prior", elem_id=f"{prefix}_preview_button")
            self.preview_prior = gr.Image(label="Prior", type="pil", interactive=False, height=THUMBNAIL_HEIGHT,
                                          elem_id=f"{prefix}_preview_prior")
            self.preview_noised = gr.Image(label="At t0", type="pil", interactive=False, height=THUMBNAIL_HEIGHT,
                                           elem_id=f"{prefix}_preview_noised")
        self.preview_caption = gr.HTML("", elem_id=f"{prefix}_preview_caption")

    def _connect(self) -> None:
        self.refresh.click(fn=lambda: gr.update(choices=model_files.choices()), inputs=[], outputs=[self.model])
        self.preset.change(fn=preset_values, inputs=[self.preset], outputs=[self.t0, self.p], show_progress=False)
        for slider in (self.t0, self.p):
            slider.change(fn=preset_name, inputs=[self.t0, self.p], outputs=[self.preset], show_progress=False)
        self.ip_adapter.change(fn=lambda on: gr.update(visible=bool(on)), inputs=[self.ip_adapter],
                               outputs=[self.ip_adapter_weight], show_progress=False)
        if self.preview_button is not None:
            self._connect_preview()
        if self.is_img2img and not self.unsupported:
            send_to.register_panel(self.image, self.last_image)

    def _connect_preview(self) -> None:
        from modules.call_queue import wrap_queued_call

        # img2img's own components, when the page built them before us (it does in the default layout).
        extras = {name: page.get(f"img2img_{name}") for name in ("image", "seed", "width", "height", "resize_mode")}
        extras = {name: component for name, component in extras.items() if component is not None}
        inputs = [self.image, self.t0, self.p, self.blur_sigma, *extras.values()]

        def run(image, t0, p, blur_sigma, *values):
            given = dict(zip(extras, values))
            return preview.run(image, given.get("image"), t0, p, blur_sigma, given.get("seed"), given.get("width"),
                               given.get("height"), given.get("resize_mode", 0))

        self.preview_button.click(fn=wrap_queued_call(run), inputs=inputs,
                                  outputs=[self.preview_prior, self.preview_noised, self.preview_caption])

    @property
    def values(self) -> list:
        return [getattr(self, name) for name in I2VParams.names()]

    @property
    def picture_parts(self) -> list:
        """What only a video from a picture uses: hidden while Forge 2's "motion only" is chosen."""
        preview_parts = [self.preview_row, self.preview_caption] if self.preview_button is not None else [self.preview_note]
        return [self.hint, self.main_row, self.ip_adapter_row, self.many, self.advanced, *preview_parts]

    @property
    def infotext_fields(self) -> list:
        if self.unsupported:
            return []  # pasting an I2V-Adapter infotext must not switch on what cannot run here
        entries = [(self.enable, lambda d: INFOTEXT_PREFIX in d),
                   (self.model, lambda d: gr.update(value=_pasted_model(d)))]
        for name in ("scale", "t0", "p", "blur_sigma", "color_match", "ip_adapter", "ip_adapter_weight", "loop"):
            entries.append((getattr(self, name), f"{INFOTEXT_PREFIX} {_knob(name).infotext}"))
        return entries


def _pasted_model(entries: dict) -> str:
    model = I2VParams.from_infotext(entries).model if INFOTEXT_PREFIX in entries else ""
    return model_files.to_choice(model if model_files.find(model) else "")
