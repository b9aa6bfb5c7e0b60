"""Send to I2V-Adapter: one click from a gallery or PNG Info to the I2V-Adapter panel of img2img.

Built on the WebUI's own paste buttons (``infotext_utils.ParamBinding``), so the picture travels the way
"Send to img2img" sends it (the selected gallery picture, through ``extract_image_from_gallery``):

- one binding targets the ``img2img`` tab: the picture becomes the img2img picture, with its size (and,
  from txt2img, the prompt) as "Send to img2img" sends them, and the page switches to img2img;
- one binding targets our panel, registered as the paste target ``i2v_adapter`` (its "init image" is the
  panel's frame-0 image); the WebUI then calls ``switch_to_i2v_adapter`` (javascript/), which opens the
  panel and switches it on.

A second button sends the picture into the panel's *last frame* (paste target ``i2v_adapter_last``, JS function
``switch_to_i2v_adapter_last``), leaving the img2img picture as it is: the video then ends on that picture.

The panel of img2img is built after the txt2img gallery, so a binding to it waits until it exists.
"""
from __future__ import annotations

from . import page

TARGET = "i2v_adapter"  # paste target name; the page's JS function is switch_to_i2v_adapter
LAST_TARGET = "i2v_adapter_last"  # the panel's last frame; JS: switch_to_i2v_adapter_last
BUTTON_LABEL = "\U0001f39e\ufe0f"  # film frames
LAST_BUTTON_LABEL = "\U0001f3c1"  # chequered flag: where the video ends
BUTTON_HINT = "Send the picture to img2img and into the I2V-Adapter panel, and switch the panel on."
LAST_BUTTON_HINT = ("Send the picture into the I2V-Adapter panel as the last frame (the video ends on it), and switch "
                    "the panel on; the img2img picture stays.")

# After which WebUI button ours goes, and where its picture and text come from.
SOURCES = {
    "txt2img_send_to_extras": "txt2img",
    "img2img_send_to_extras": "img2img",
    "extras_tab": "pnginfo",  # PNG Info's last "Send to" button
}

_panel_ready = False
_waiting: list = []  # bindings to our panel made before the panel existed


def _infotext_utils():
    try:
        from modules import infotext_utils
    except ImportError:  # WebUI 1.7 and older
        from modules import generation_parameters_copypaste as infotext_utils
    return infotext_utils


def reset() -> None:
    global _panel_ready
    _panel_ready = False
    _waiting.clear()


def install() -> None:
    """Have our buttons created next to the WebUI's send-to buttons of every page built from now on."""
    for elem_id, source in SOURCES.items():
        page.after(elem_id, _BUTTON_MAKERS[source])


def register_panel(panel_image, last_image=None) -> None:
    """The img2img panel's frame-0 image (and last-frame image) are the buttons' targets (called while the
    panel is built)."""
    global _panel_ready
    utils = _infotext_utils()
    utils.add_paste_fields(TARGET, panel_image, [])
    if last_image is not None:
        utils.add_paste_fields(LAST_TARGET, last_image, [])
    _panel_ready = True
    while _waiting:
        utils.register_paste_params_button(_waiting.pop(0))


def _bind(button, image, source_tab=None, paste_field_names=None) -> None:
    utils = _infotext_utils()
    utils.register_paste_params_button(utils.ParamBinding(
        paste_button=button, tabname="img2img", source_image_component=image, source_tabname=source_tab,
        paste_field_names=paste_field_names or []))
    _bind_to_panel(utils.ParamBinding(paste_button=button, tabname=TARGET, source_image_component=image))


def _bind_last(button, image) -> None:
    utils = _infotext_utils()
    _bind_to_panel(utils.ParamBinding(paste_button=button, tabname=LAST_TARGET, source_image_component=image))


def _bind_to_panel(binding) -> None:
    if _panel_ready:
        _infotext_utils().register_paste_params_button(binding)
    else:
        _waiting.append(binding)


def _gallery_button(tab: str) -> None:
    from modules import scripts
    from modules.ui_components import ToolButton

    gallery = page.get(f"{tab}_gallery")
    if gallery is None:
        return
    button = ToolButton(BUTTON_LABEL, elem_id=f"{tab}_send_to_i2v_adapter", tooltip=BUTTON_HINT)
    # As the WebUI's own gallery buttons: from txt2img the prompt and its script fields travel along.
    runner = scripts.scripts_txt2img if tab == "txt2img" else scripts.scripts_img2img
    _bind(button, gallery, source_tab="txt2img" if tab == "txt2img" else None,
          paste_field_names=getattr(runner, "paste_field_names", []))
    _bind_last(ToolButton(LAST_BUTTON_LABEL, elem_id=f"{tab}_send_to_i2v_adapter_last", tooltip=LAST_BUTTON_HINT),
               gallery)


def _pnginfo_button() -> None:
    import gradio as gr

    image = page.get("pnginfo_image")
    if image is None:
        return
    button = gr.Button("Send to I2V-Adapter", elem_id="pnginfo_send_to_i2v_adapter")
    # Picture and size only: pasting the whole infotext would also paste "I2V-Adapter: off" for a plain
    # picture, racing the switch that opens the panel.
    _bind(button, image)
    _bind_last(gr.Button("Send to I2V-Adapter as the last frame", elem_id="pnginfo_send_to_i2v_adapter_last"), image)


_BUTTON_MAKERS = {
    "txt2img": lambda: _gallery_button("txt2img"),
    "img2img": lambda: _gallery_button("img2img"),
    "pnginfo": _pnginfo_button,
}
