"""The WebUI's own components our panel connects to, picked up by element id as the page is built.

An ``on_after_component`` callback sees every component the moment it is created (inside its row), so
it can both remember the ones we read (img2img's picture, size, resize mode and seed, the galleries,
PNG Info's picture and text) and add our buttons next to the WebUI's "send to" buttons.
"""
from __future__ import annotations

from typing import Callable

# elem_id -> what we call it
WATCHED = {
    "img2img_image": "img2img_image",
    "img2img_width": "img2img_width",
    "img2img_height": "img2img_height",
    "resize_mode": "img2img_resize_mode",
    "img2img_seed": "img2img_seed",
    "txt2img_gallery": "txt2img_gallery",
    "img2img_gallery": "img2img_gallery",
    "pnginfo_image": "pnginfo_image",
}

_components: dict[str, object] = {}
_after: dict[str, list[Callable]] = {}


def reset() -> None:
    """A new page is being built (start, or Reload UI): forget the old page's components."""
    _components.clear()


def get(name: str):
    return _components.get(name)


def after(elem_id: str, callback: Callable) -> None:
    """Call ``callback()`` right after the component with ``elem_id`` is created, in its layout context.

    Registering the same callback again (the script module is re-imported on Reload UI) changes nothing.
    """
    callbacks = _after.setdefault(elem_id, [])
    if callback not in callbacks:
        callbacks.append(callback)


def on_after_component(component, **kwargs) -> None:
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    if elem_id is None:
        return
    if elem_id in WATCHED:
        _components[WATCHED[elem_id]] = component
    for callback in _after.get(elem_id, ()):
        callback()
