"""The video settings Forge 2 adds to the panel and the API (there the extension is its own AnimateDiff).

The panel's values are the I2VParams fields in order, then these; an API dict holds both sets of keys.
Other hosts never build these fields: there an API dict with them is refused by name like any unknown key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..params import INFOTEXT_PREFIX, I2VParams, Knob, ParamsError

FORMATS = ("GIF", "MP4", "WEBM", "PNG")


def _field(default, knob: Knob, **kwargs):
    return field(default=default, metadata={"knob": knob}, **kwargs)


@dataclass
class MotionParams:
    motion_module: str = _field("", Knob("Motion module", infotext="motion module",
                                         help="An AnimateDiff SD1.5 motion module (v1, v2, v3) from models/AnimateDiff."))
    frames: int = _field(16, Knob("Frames", infotext="frames", minimum=2, maximum=64, step=1))
    fps: int = _field(8, Knob("FPS", infotext="fps", minimum=1, maximum=60, step=1))
    context_length: int = _field(16, Knob("Context length", infotext="context length", minimum=0, maximum=32, step=1,
                                          help="Frames per window for longer videos; 0: the motion module's limit."))
    context_overlap: int = _field(4, Knob("Context overlap", infotext="context overlap", minimum=0, maximum=31,
                                          step=1, help="Frames shared by neighbouring windows."))
    formats: tuple = _field(("GIF",), Knob("Formats", infotext="formats"))

    def __post_init__(self):
        for f in fields(self):
            knob = f.metadata["knob"]
            value = getattr(self, f.name)
            if knob.minimum is not None and not knob.minimum <= value <= knob.maximum:
                raise ParamsError(f"I2V-Adapter: {f.name} must be between {knob.minimum:g} and {knob.maximum:g}, "
                                  f"got {value}.")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> "MotionParams":
        converted = {}
        for f in fields(cls):
            value = values.get(f.name)
            if value is not None:
                converted[f.name] = _convert(f.name, f.default, value)
        return cls(**converted)

    def infotext(self) -> dict[str, str]:
        entries = {}
        for f in fields(self):
            key = f.metadata["knob"].infotext
            if key is not None:
                value = getattr(self, f.name)
                entries[f"{INFOTEXT_PREFIX} {key}"] = ", ".join(value) if isinstance(value, tuple) else str(value)
        return entries

    @classmethod
    def knob(cls, name: str) -> Knob:
        return next(f.metadata["knob"] for f in fields(cls) if f.name == name)


def formats_from_infotext(entries: dict) -> list[str] | None:
    """The formats an infotext names (the WebUI hands back "GIF, PNG" unquoted), or None if it names none."""
    text = entries.get(f"{INFOTEXT_PREFIX} {MotionParams.knob('formats').infotext}")
    if text is None:
        return None
    try:
        return list(_convert("formats", (), text))
    except ParamsError:
        return None


def _convert(name: str, default, value):
    if isinstance(default, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ParamsError(f"I2V-Adapter: {name} must be a list of {', '.join(FORMATS)}, got {value!r}.")
        chosen = tuple(dict.fromkeys(str(item).strip().upper() for item in items if str(item).strip()))
        unknown = [item for item in chosen if item not in FORMATS]
        if unknown:
            raise ParamsError(f"I2V-Adapter: unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}.")
        return chosen
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or not math.isfinite(number) or number != int(number):
            raise ParamsError(f"I2V-Adapter: {name} must be a whole number, got {value!r}.")
        return int(number)
    return str(value)


def split_arguments(args) -> tuple[dict | list, MotionParams]:
    """The script's arguments on Forge 2 -> (what I2VParams reads, the video settings).

    An API dict is split by key; the panel's values by position (I2VParams fields first).
    """
    if args and isinstance(args[0], dict):
        values = dict(args[0])
        known = I2VParams.names() + MotionParams.names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ParamsError(f"I2V-Adapter: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}.")
        motion = {name: values.pop(name) for name in MotionParams.names() if name in values}
        return [values], MotionParams.from_dict(motion)
    count = len(I2VParams.names())
    extra = list(args[count:])
    return list(args[:count]), MotionParams.from_dict(dict(zip(MotionParams.names(), extra)))
