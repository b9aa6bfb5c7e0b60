"""One typed parameter object; UI, infotext, API and presets derive from its field list."""
from __future__ import annotations

import math
import ntpath
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from PIL import Image

INFOTEXT_PREFIX = "I2V-Adapter"


@dataclass(frozen=True)
class Knob:
    """How one field shows in the UI and the infotext."""

    label: str
    infotext: str | None = None  # key suffix in the infotext; None: not written
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    help: str = ""


def _field(default, knob: Knob):
    return field(default=default, metadata={"knob": knob})


@dataclass
class I2VParams:
    enable: bool = _field(False, Knob("Enable"))
    # A PIL image (UI) or a base64 string (API) until the host decodes it; None: the img2img init image.
    image: Any = _field(None, Knob("Image"))
    model: str = _field("", Knob("Adapter weights", infotext="model",
                                  help="Empty: training-free mode (no weights file)."))
    scale: float = _field(1.0, Knob("Adapter scale", infotext="scale", minimum=0.0, maximum=2.0, step=0.05,
                                    help="Strength of the first-frame attention."))
    t0: float = _field(1.0, Knob("t0 (start noise level)", infotext="t0", minimum=0.05, maximum=1.0, step=0.05,
                                 help="Lower: steadier video, less motion."))
    p: float = _field(0.5, Knob("p (share kept sharp)", infotext="p", minimum=0.0, maximum=1.0, step=0.05,
                                help="Share of the latent kept sharp in the prior; higher: more motion."))
    blur_sigma: float = _field(18.0, Knob("Blur sigma", infotext="blur sigma", minimum=0.0, maximum=32.0, step=0.5,
                                          help="Gaussian blur of the prior, in latent pixels."))
    color_match: bool = _field(True, Knob("Colour match to the image", infotext="color match"))
    ip_adapter: bool = _field(False, Knob(
        "Use the image as IP-Adapter content", infotext="IP-Adapter",
        help="Adds a ControlNet IP-Adapter unit with this image, as in the paper (needs ControlNet: the "
             "extension on A1111, the built-in one on Forge; and an IP-Adapter model, plus preferred)."))
    ip_adapter_weight: float = _field(1.0, Knob("IP-Adapter weight", infotext="IP-Adapter weight", minimum=0.0,
                                                maximum=2.0, step=0.05))
    # The video ends exactly on this picture (keyframes A -> B); as ``image``: None, a picture or base64.
    last_image: Any = _field(None, Knob("Last frame", help="Optional: the video ends exactly on this picture."))
    loop: bool = _field(False, Knob("Loop", infotext="loop",
                                    help="The last frame is the first picture again: the video plays as a seamless "
                                         "loop (the files hold each frame once)."))
    # Several pictures, one video each (the batch count becomes their number): uploads, pictures or base64.
    images: Any = _field(None, Knob("More pictures", help="One video per picture, each starting on it."))
    folder: str = _field("", Knob("Folder on the server", help="One video per picture in this folder."))

    def __post_init__(self):
        for f in fields(self):
            knob = f.metadata["knob"]
            value = getattr(self, f.name)
            if knob.minimum is not None and not knob.minimum <= float(value) <= knob.maximum:
                raise ParamsError(f"I2V-Adapter: {f.name} must be between {knob.minimum} and {knob.maximum}, got {value}.")
        if self.images is not None and not isinstance(self.images, (list, tuple)):
            raise ParamsError(f"I2V-Adapter: images must be a list of pictures, got {type(self.images).__name__}.")
        if self.images and self.folder.strip():
            raise ParamsError("I2V-Adapter: give the pictures as images or as a folder, not both.")
        if self.loop and self.has_last_image:
            raise ParamsError("I2V-Adapter: loop ends the video on the first picture, so it cannot also end on "
                              "last_image: leave the last frame empty or turn loop off.")

    @property
    def has_last_image(self) -> bool:
        return self.last_image is not None and not (isinstance(self.last_image, str) and not self.last_image.strip())

    @property
    def many_pictures(self) -> bool:
        """Whether the request names several pictures (a list or a folder): one video each."""
        return bool(self.images) or bool(self.folder.strip())

    @property
    def keyframed(self) -> bool:
        """Whether the video ends on a keyframe (a last picture, or the first one again for a loop)."""
        return self.loop or self.has_last_image

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_args(cls, args) -> "I2VParams":
        """From the API or the script's argument list: a dict, an I2VParams, or values in field order."""
        if isinstance(args, cls):
            return args
        if isinstance(args, dict):
            return cls.from_dict(args)
        if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__"):
            raise ParamsError(f"I2V-Adapter takes one dict of named values (or a list in field order), "
                              f"not {type(args).__name__}.")
        args = list(args)
        if len(args) > len(fields(cls)):
            raise ParamsError(f"I2V-Adapter takes at most {len(fields(cls))} values, got {len(args)}.")
        return cls.from_dict(dict(zip(cls.names(), args)))

    @classmethod
    def from_dict(cls, values: dict) -> "I2VParams":
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ParamsError(f"I2V-Adapter: unknown parameter(s) {', '.join(unknown)}; "
                              f"known: {', '.join(cls.names())}.")
        converted = {}
        for f in fields(cls):
            if f.name in values and values[f.name] is not None:
                converted[f.name] = _convert(f.name, f.type, values[f.name])
        return cls(**converted)

    def infotext(self, model_hash: str = "") -> dict[str, str]:
        """``extra_generation_params`` entries, e.g. ``{"I2V-Adapter t0": "0.8"}``."""
        entries = {INFOTEXT_PREFIX: "on"}
        for f in fields(self):
            key = f.metadata["knob"].infotext
            if key is not None:
                entries[f"{INFOTEXT_PREFIX} {key}"] = _format(getattr(self, f.name))
        entries[f"{INFOTEXT_PREFIX} model"] = self.model or "none (training-free)"
        if self.has_last_image:
            entries[f"{INFOTEXT_PREFIX} last frame"] = "picture"
        if model_hash:
            entries[f"{INFOTEXT_PREFIX} hash"] = model_hash
        return entries

    @classmethod
    def from_infotext(cls, entries: dict[str, str]) -> "I2VParams":
        """Parameters back from pasted generation info; absent keys take defaults."""
        values = {"enable": INFOTEXT_PREFIX in entries}
        for f in fields(cls):
            key = f.metadata["knob"].infotext
            text = entries.get(f"{INFOTEXT_PREFIX} {key}") if key else None
            if text is not None:
                values[f.name] = _convert(f.name, f.type, text)
        if values.get("model") == "none (training-free)":
            values["model"] = ""
        return cls.from_dict(values)

    def with_preset(self, name: str) -> "I2VParams":
        return replace(self, **PRESETS[name])


class ParamsError(ValueError):
    pass


_TRUE_WORDS = ("true", "1", "on", "yes")
_FALSE_WORDS = ("false", "0", "off", "no")
_IMAGE_KINDS = "a picture (PIL image or array), a gradio image value, or a base64-encoded PNG/JPEG string"


def _convert(name: str, kind: str, value):
    if kind == "bool":
        return to_bool(name, value)
    if kind == "float":
        return _to_float(name, value)
    if kind == "str":
        return _to_folder(value) if name == "folder" else _to_model_name(name, value)
    if name in ("image", "last_image"):
        return _checked_image(name, value)
    return value


def to_bool(name: str, value) -> bool:
    # Only what a checkbox, JSON or an infotext can mean; bool([1, 2]) would silently be True.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ParamsError(f"I2V-Adapter: {name} must be true or false, got {value!r}.")


def _to_float(name: str, value) -> float:
    if isinstance(value, (bool, list, tuple, dict, set)):
        raise ParamsError(f"I2V-Adapter: {name} cannot be {value!r}; give a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParamsError(f"I2V-Adapter: {name} cannot be {value!r}; give a number.") from None
    if not math.isfinite(number):
        raise ParamsError(f"I2V-Adapter: {name} must be a finite number, got {value!r}.")
    return number


def _to_folder(value) -> str:
    if not isinstance(value, str):
        raise ParamsError(f"I2V-Adapter: folder must be a folder's path on the server, got {value!r}.")
    return value


def _to_model_name(name: str, value) -> str:
    if not isinstance(value, str):
        raise ParamsError(f"I2V-Adapter: {name} must be a file name from the list, got {value!r}.")
    # Names are relative to the adapter folders (sub-folders allowed); never a way out of them.
    parts = value.replace("\\", "/").split("/")
    if os.path.isabs(value) or ntpath.isabs(value) or ".." in parts:
        raise ParamsError(f"I2V-Adapter: {name} must be a file name from the adapter folder's list, not a path "
                          f"outside it; got {value!r}.")
    return value


def _checked_image(name: str, value):
    if isinstance(value, (str, dict, np.ndarray, Image.Image)):
        return value
    raise ParamsError(f"I2V-Adapter: {name} must be {_IMAGE_KINDS}; got {type(value).__name__}.")


def _format(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# From the paper's Table 2 (t0, p). "lively" has the highest FlowScore (0.99), "steady" among the lowest
# warping errors (8.35) with little motion (FlowScore 0.19); "official" is what the released code uses.
PRESETS: dict[str, dict[str, float]] = {
    "official": {"t0": 1.0, "p": 0.5},
    "steady": {"t0": 0.7, "p": 1.0},
    "lively": {"t0": 1.0, "p": 0.9},
}
