"""The video settings Forge 2 adds to the panel and the API (there the extension is its own AnimateDiff).

The panel's values are the I2VParams fields in order, then these; an API dict holds both sets of keys.
Other hosts never build these fields: there an API dict with them is refused by name like any unknown key.
"""
from __future__ import annotations

import math
import ntpath
import os
from dataclasses import dataclass, field, fields

from ...motion.windows import LOOP, LOOP_EVERY_STRIDE, LOOP_MODES, LOOP_OFF, LOOP_WITH_PROMPTS
from ...params import INFOTEXT_PREFIX, I2VParams, Knob, ParamsError, to_bool

FORMATS = ("GIF", "MP4", "WEBM", "WEBP", "PNG")
FROM_A_PICTURE = "from a picture"
MOTION_ONLY = "motion only"
# sd-webui-animatediff's names for the same loops, so its users' requests and habits carry over.
LOOP_ALIASES = {"N": LOOP_OFF, "R-P": LOOP, "R+P": LOOP_WITH_PROMPTS, "A": LOOP_EVERY_STRIDE}
LOOP_LABELS = {LOOP_OFF: "off", LOOP: "loop the motion", LOOP_WITH_PROMPTS: "loop motion and prompt travel",
               LOOP_EVERY_STRIDE: "loop with a window at every stride"}
MAX_LORA_STRENGTH = 2.0


def _field(default, knob: Knob, **kwargs):
    return field(default=default, metadata={"knob": knob}, **kwargs)


@dataclass
class MotionParams:
    motion_module: str = _field("", Knob("Motion module", infotext="motion module",
                                         help="From models/AnimateDiff: for SD1.5 AnimateDiff v1, v2, v3 or "
                                              "AnimateLCM; for SDXL AnimateDiff-SDXL or HotShot-XL."))
    frames: int = _field(16, Knob("Frames", infotext="frames", minimum=2, maximum=64, step=1))
    fps: int = _field(8, Knob("FPS", infotext="fps", minimum=1, maximum=60, step=1))
    context_length: int = _field(16, Knob("Context length", infotext="context length", minimum=0, maximum=32, step=1,
                                          help="Frames per window for longer videos; 0: the motion module's "
                                               "own (HotShot-XL: 8)."))
    context_overlap: int = _field(4, Knob("Context overlap", infotext="context overlap", minimum=0, maximum=31,
                                          step=1, help="Frames shared by neighbouring windows."))
    formats: tuple = _field(("GIF",), Knob("Formats", infotext="formats"))
    motion_only: bool = _field(False, Knob("Video", infotext="motion only",
                                           help="From a picture: frame 0 is your picture (I2V-Adapter). Motion "
                                                "only: a plain AnimateDiff video from the prompt (txt2img) or the "
                                                "img2img picture noised for every frame."))
    closed_loop: str = _field(LOOP_OFF, Knob("Closed loop", infotext="closed loop",
                                             help="Windows wrap round so the last frames lead into the first: "
                                                  "the video plays as a loop."))
    motion_lora: tuple = _field((), Knob("Motion LoRA", infotext="motion LoRA",
                                         help="Camera moves (AnimateDiff v2 motion LoRAs from models/AnimateDiff/lora), "
                                              "as name:strength, several separated by commas."))
    quality: int = _field(80, Knob("Video quality", infotext="video quality", minimum=0, maximum=100, step=1,
                                   help="MP4, WEBM and WEBP: higher is sharper and larger."))
    webp_lossless: bool = _field(False, Knob("Lossless WEBP", infotext="WEBP lossless"))

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
                converted[f.name] = _CONVERTERS.get(f.name, _convert_number_or_text)(f.name, f.default, value)
        return cls(**converted)

    def infotext(self) -> dict[str, str]:
        entries = {}
        for f in fields(self):
            key = f.metadata["knob"].infotext
            if key is not None:
                entries[f"{INFOTEXT_PREFIX} {key}"] = _TO_TEXT.get(f.name, str)(getattr(self, f.name))
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
        return list(_convert_formats("formats", (), text))
    except ParamsError:
        return None


def motion_lora_text(pairs) -> str:
    """``(("v2_lora_ZoomIn.ckpt", 0.8),)`` -> ``"v2_lora_ZoomIn.ckpt:0.8"``: the panel's and the infotext's form."""
    return ", ".join(f"{name}:{strength:g}" for name, strength in pairs)


def _convert_formats(name: str, default, value) -> tuple:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ParamsError(f"I2V-Adapter: {name} must be a list of {', '.join(FORMATS)}, got {value!r}.")
    chosen = tuple(dict.fromkeys(str(item).strip().upper() for item in items if str(item).strip()))
    unknown = [item for item in chosen if item not in FORMATS]
    if unknown:
        raise ParamsError(f"I2V-Adapter: unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}.")
    return chosen


def _convert_bool(name: str, default, value) -> bool:
    """As I2VParams reads a switch; the source radio's two labels are its two values."""
    labels = {MOTION_ONLY: True, FROM_A_PICTURE: False}
    return labels[value] if isinstance(value, str) and value in labels else to_bool(name, value)


def _convert_loop(name: str, default, value) -> str:
    text = str(value).strip()
    mode = LOOP_ALIASES.get(text.upper(), text.lower())
    mode = next((key for key, label in LOOP_LABELS.items() if label == mode), mode)
    if mode not in LOOP_MODES:
        raise ParamsError(f"I2V-Adapter: closed_loop must be one of {', '.join(LOOP_MODES)} (or AnimateDiff's "
                          f"{', '.join(LOOP_ALIASES)}), got {value!r}.")
    return mode


def _convert_motion_lora(name: str, default, value) -> tuple:
    """A list of {"name", "strength"} dicts (API), or "name:strength, ..." text (panel, infotext)."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ParamsError(f"I2V-Adapter: motion_lora must be a list of {{\"name\": ..., \"strength\": ...}}, "
                          f"got {value!r}.")
    return tuple(_lora_entry(item) for item in items)


def _lora_entry(item) -> tuple[str, float]:
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"name", "strength"})
        if unknown or "name" not in item:
            raise ParamsError(f"I2V-Adapter: each motion_lora entry takes \"name\" and \"strength\", got {item!r}.")
        lora_name, strength = item["name"], item.get("strength", 1.0)
    elif isinstance(item, str):
        lora_name, _, strength = item.rpartition(":") if ":" in item else (item, "", 1.0)
    else:
        raise ParamsError(f"I2V-Adapter: a motion_lora entry must be a name:strength text or a dict, got {item!r}.")
    lora_name = str(lora_name).strip()
    parts = lora_name.replace("\\", "/").split("/")
    if not lora_name or os.path.isabs(lora_name) or ntpath.isabs(lora_name) or ".." in parts:
        raise ParamsError(f"I2V-Adapter: a motion LoRA must be a file name from the motion LoRA folder, got {lora_name!r}.")
    try:
        number = float(strength)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(strength, bool) or not math.isfinite(number) or abs(number) > MAX_LORA_STRENGTH:
        raise ParamsError(f"I2V-Adapter: the strength of motion LoRA {lora_name} must be a number from "
                          f"-{MAX_LORA_STRENGTH:g} to {MAX_LORA_STRENGTH:g}, got {strength!r}.")
    return lora_name, number


def _convert_number_or_text(name: str, default, value):
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or not math.isfinite(number) or number != int(number):
            raise ParamsError(f"I2V-Adapter: {name} must be a whole number, got {value!r}.")
        return int(number)
    return str(value)


_CONVERTERS = {"formats": _convert_formats, "motion_only": _convert_bool, "webp_lossless": _convert_bool,
               "closed_loop": _convert_loop, "motion_lora": _convert_motion_lora}
_TO_TEXT = {"formats": ", ".join, "motion_lora": motion_lora_text}


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
        motion = MotionParams.from_dict({name: values.pop(name) for name in MotionParams.names() if name in values})
        if motion.motion_only and values.get("image") is not None:
            # The panel keeps a dropped picture while "motion only" hides it; an API caller who sends one means it.
            raise ParamsError("I2V-Adapter: image is for videos from a picture; with motion_only the video comes "
                              "from the prompt (or the img2img picture) alone: leave image out.")
        for key in ("last_image", "loop"):
            if motion.motion_only and values.get(key):
                raise ParamsError(f"I2V-Adapter: {key} is for videos from a picture; with motion_only leave it out "
                                  f"(closed_loop makes a motion-only video loop).")
        return [values], motion
    count = len(I2VParams.names())
    extra = list(args[count:])
    return list(args[:count]), MotionParams.from_dict(dict(zip(MotionParams.names(), extra)))
