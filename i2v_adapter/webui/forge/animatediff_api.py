"""sd-webui-animatediff's forge/master branch (classic Forge) and API requests."""
from __future__ import annotations

import sys

from . import controlnet as forge_controlnet

ANIMATEDIFF_UI_MODULE = "scripts.animatediff_ui"
_GUARD_TAG = "i2v_adapter_original"


def guard_animatediff_api(p) -> None:
    """Make AnimateDiff (forge/master, 2.0.2-f) see only enabled ControlNet units in this API request.

    In API requests it passes every ControlNet unit on, enabled or not; Forge's API fills the unit slots
    with disabled defaults, AnimateDiff then asks for a control video, its setup fails, and the request
    quietly returns plain images. Called only for requests with I2V-Adapter on; undone by :func:`sweep`.
    """
    module = sys.modules.get(ANIMATEDIFF_UI_MODULE)
    current = getattr(module, "get_controlnet_units", None)
    if current is None or not getattr(p, "is_api", False) or hasattr(current, _GUARD_TAG):
        return

    def get_controlnet_units(p):
        return forge_controlnet.enabled_units(p)

    setattr(get_controlnet_units, _GUARD_TAG, current)
    module.get_controlnet_units = get_controlnet_units


def sweep() -> None:
    """Undo :func:`guard_animatediff_api` (a no-op where it was never applied)."""
    module = sys.modules.get(ANIMATEDIFF_UI_MODULE)
    original = getattr(getattr(module, "get_controlnet_units", None), _GUARD_TAG, None)
    if original is not None:
        module.get_controlnet_units = original
