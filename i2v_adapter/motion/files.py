"""Loading a motion-module file: read safely, tell the format from the keys, build, account for every key.

Accepted: AnimateDiff SD1.5 motion modules in the original layout (v1: no mid block, 24 positions; v2:
mid block; v3: no mid block, 32 positions), AnimateLCM's (v2's layout with its position tables left out of
the file: AnimateLCM adds the same sinusoids, 64 positions, so they are computed here), AnimateDiff-SDXL
(three levels of 320/640/1280 channels, 32 positions) and HotShot-XL (the same three levels named
``temporal_attentions``, 24 positions), the same in diffusers' ``MotionAdapter`` naming, and the motion part
of a whole diffusers 3D UNet such as the official ``animatediff_v15_v1_ipplus.pth`` (its other tensors are
counted in ``notes``). Refused, each with one sentence: motion LoRAs, foreign and damaged files.
The file name never decides anything.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

from ..weights.adapter import WeightsError
from ..weights.reading import listing, read_file, strip_prefixes
from .keys import (LORA_PART, MOTION_KEY, family_of, hotshot_to_original_names, is_diffusers_motion_key,
                   is_hotshot_key, to_original_names)
from .architecture import sinusoidal_table
from .module import BASE_MODELS, DOWN_MODULES_PER_LEVEL, SDXL, UP_MODULES_PER_LEVEL, MotionModule

V1_POSITIONS = 24
_SUPPORTED = ("supported are AnimateDiff v1, v2, v3 and AnimateLCM for SD1.5, AnimateDiff-SDXL and HotShot-XL for "
              "SDXL")
# AnimateLCM's motion modules keep their sinusoidal position tables out of the file; its code makes them 64 long.
ANIMATELCM_POSITIONS = 64


class MotionModuleError(WeightsError):
    """A motion-module file that cannot be used; the message is one sentence for the user."""


class _Refusal(Exception):
    """What is wrong with the tensors, as the end of a sentence that starts with the file's name."""


def load_motion_module(path) -> MotionModule:
    """The motion module in ``path`` (safetensors, or a pickle read with the weights-only unpickler).

    Raises :class:`MotionModuleError` naming the file and what is wrong.
    """
    path = Path(path)
    try:
        raw = read_file(path)
    except WeightsError as error:
        raise MotionModuleError(str(error)) from None
    return motion_module_from_tensors(raw.tensors, path.name)


def motion_module_from_tensors(tensors: dict[str, torch.Tensor], name: str = "the file") -> MotionModule:
    """The motion module in a file's ``tensors``; a :class:`MotionModuleError` starting with ``name`` if none."""
    try:
        return _build(tensors)
    except _Refusal as refusal:
        raise MotionModuleError(f"{name} {refusal}") from None


def _build(tensors: dict[str, torch.Tensor]) -> MotionModule:
    tensors = {strip_prefixes(key): value for key, value in tensors.items()}
    hotshot = any(is_hotshot_key(key) for key in tensors)
    if hotshot:
        tensors = hotshot_to_original_names(tensors)
    _refuse_other_kinds(tensors)
    motion = {key: value for key, value in tensors.items() if MOTION_KEY.match(key)}
    others = Counter(family_of(key) for key in tensors if key not in motion)
    if others["unknown"]:
        unknown = [key for key in tensors if key not in motion and family_of(key) == "unknown"]
        raise _Refusal(f"holds tensors that belong neither to a motion module nor to a UNet: {listing(unknown)}")
    state_dict = to_original_names(motion)
    geometry = _geometry(state_dict, hotshot)
    if geometry["version"] == "AnimateLCM":
        state_dict.update(_position_tables(state_dict, geometry["max_frames"]))
    # Built without storage: the file's tensors become its weights, no time spent on a random init.
    with torch.device("meta"):
        module = MotionModule(source="hotshot" if hotshot else _source(motion, others), **geometry)
    _load_every_key(module, state_dict)
    module.eval()
    if others:
        module.notes.append(_whole_unet_note(others, len(motion)))
    return module


def _refuse_other_kinds(tensors: dict[str, torch.Tensor]) -> None:
    keys = list(tensors)
    if any(LORA_PART in key.lower() for key in keys):
        raise _Refusal("is a LoRA (e.g. a motion LoRA), not a motion module")
    if not any(MOTION_KEY.match(key) for key in keys):
        raise _Refusal(f"holds no motion module (no down_blocks.N.motion_modules tensors; first keys: "
                       f"{listing(sorted(keys)[:3])}); {_SUPPORTED}")


def _source(motion: dict, others: Counter) -> str:
    if others["ip-adapter"]:
        return "ipplus"
    if others:
        return "whole-unet"
    return "diffusers" if any(is_diffusers_motion_key(key) for key in motion) else "original"


def _module_keys(state_dict: dict) -> dict[str, dict[str, torch.Tensor]]:
    """``{'down_blocks.0.motion_modules.1': {rest: tensor}}``."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = MOTION_KEY.match(key)
        modules.setdefault(f"{match['level']}.motion_modules.{match['index']}", {})[match["rest"]] = tensor
    return modules


def _level_counts(modules, kind: str) -> dict[int, int]:
    counts: Counter = Counter()
    for name in modules:
        if name.startswith(kind + "."):
            counts[int(name.split(".")[1])] += 1
    return dict(sorted(counts.items()))


def _geometry(state_dict: dict, hotshot: bool) -> dict:
    """MotionModule arguments (channels, max_frames, mid_block, transformer_blocks, version) from the keys."""
    modules = _module_keys(state_dict)
    down, up = _level_counts(modules, "down_blocks"), _level_counts(modules, "up_blocks")
    widths = {name: parts["temporal_transformer.norm.weight"].shape[0] for name, parts in modules.items()
              if "temporal_transformer.norm.weight" in parts}
    level_widths = tuple(widths.get(f"down_blocks.{level}.motion_modules.0") for level in sorted(down))
    first = level_widths[0] if level_widths and level_widths[0] else 0
    base = next((base for base in BASE_MODELS if len(base.level_widths) == len(down)), None)
    if (base is None or down != dict.fromkeys(range(len(down)), DOWN_MODULES_PER_LEVEL)
            or up != dict.fromkeys(range(len(down)), UP_MODULES_PER_LEVEL)
            or level_widths != tuple(first * m for m in base.level_widths)):
        raise _Refusal(f"does not have a motion-module layout (modules per down level {down}, per up "
                       f"level {up}, level widths {level_widths}); {_SUPPORTED}")
    tables = {tensor.shape[1] for key, tensor in state_dict.items() if key.endswith(".pos_encoder.pe")}
    mid_block = any(name.startswith("mid_block.") for name in modules)
    if not tables and not mid_block:
        raise _Refusal(f"has no position tables (pos_encoder.pe) and no mid block: neither AnimateDiff's nor "
                       f"AnimateLCM's layout; {_SUPPORTED}")
    if len(tables) > 1:
        raise _Refusal(f"has position tables of different lengths {sorted(tables)}")
    stored_tables = bool(tables)
    max_frames = tables.pop() if stored_tables else ANIMATELCM_POSITIONS
    blocks = {int(m[1]) for rest in modules["down_blocks.0.motion_modules.0"]
              if (m := re.match(r"temporal_transformer\.transformer_blocks\.(\d+)\.", rest))}
    if base is SDXL:
        if not stored_tables:
            raise _Refusal(f"has SDXL's three levels but no position tables (pos_encoder.pe); {_SUPPORTED}")
        # sd-webui-animatediff's rule as well: HotShot-XL's tables hold 24 positions, AnimateDiff-SDXL's 32.
        version = "HotShot-XL" if hotshot or max_frames == V1_POSITIONS else "SDXL beta"
    else:
        version = ("AnimateLCM" if not stored_tables else "v2" if mid_block
                   else "v1" if max_frames == V1_POSITIONS else "v3")
    return {"channels": level_widths, "max_frames": max_frames, "mid_block": mid_block,
            "transformer_blocks": max(1, len(blocks)), "version": version}


def _position_tables(state_dict: dict, length: int) -> dict[str, torch.Tensor]:
    """The sinusoidal table of every temporal attention, as AnimateLCM's code adds it (the file has none)."""
    tables = {}
    for key, tensor in state_dict.items():
        match = re.match(r"^(.*\.attention_blocks\.\d+)\.to_q\.weight$", key)
        if match:
            tables[f"{match[1]}.pos_encoder.pe"] = sinusoidal_table(length, tensor.shape[1])
    return tables


def _load_every_key(module: MotionModule, state_dict: dict) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(f"{key} {tuple(state_dict[key].shape)} instead of {tuple(expected[key].shape)}"
                   for key in set(expected) & set(state_dict) if expected[key].shape != state_dict[key].shape)
    problems = [f"{what} {listing(keys)}" for what, keys in
                (("lacks", missing), ("has unknown tensors", unexpected), ("has tensors of the wrong shape", wrong))
                if keys]
    if problems:
        raise _Refusal(f"is not a complete AnimateDiff motion module: it {'; it '.join(problems)}")
    non_float = [key for key, tensor in state_dict.items() if not tensor.is_floating_point()]
    if non_float:
        raise _Refusal(f"has tensors that are not floating point: {listing(non_float)}")
    module.load_state_dict({key: tensor.float().contiguous() for key, tensor in state_dict.items()},
                           strict=True, assign=True)


def _whole_unet_note(others: Counter, motion_count: int) -> str:
    parts = {"unet": "spatial UNet", "ip-adapter": "IP-Adapter K/V", "adapter": "I2V-Adapter"}
    ignored = ", ".join(f"{others[family]} {label}" for family, label in parts.items() if others[family])
    return (f"whole-UNet file: used its {motion_count} motion-module tensors; not used here: {ignored} tensors "
            f"(the WebUI's own checkpoint, IP-Adapter and adapter files serve those)")
