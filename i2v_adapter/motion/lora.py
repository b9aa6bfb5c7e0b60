"""Motion LoRAs (AnimateDiff v2 camera moves: ZoomIn/Out, PanLeft/Right, TiltUp/Down, Rolling...):
reading them, checking they fit a motion module, and merging them into it for one generation.

A motion LoRA holds, for each temporal attention projection (``to_q``, ``to_k``, ``to_v``, ``to_out.0``)
of the motion modules, a low-rank pair ``up`` (C x r) and ``down`` (r x C). Merged at strength s:
``W' = W + s * scale * up @ down``, with ``scale = alpha / r`` where the file stores an alpha, else 1
(the released files were trained without one). Two layouts are read:

    released .ckpt:  down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0
                     .attention_blocks.0.processor.to_q_lora.down.weight            (.up.weight; to_out_lora)
    re-saved files:  the module path with underscores, as the WebUI's LoRA loader names layers:
                     down_blocks_0_motion_modules_0_temporal_transformer_transformer_blocks_0
                     _attention_blocks_0_to_q.lora_down.weight       (.lora_up.weight, to_out_0, optional .alpha);
                     the dotted path with ``to_q.lora_down.weight`` is read too

The merge changes the module's weights in place; :func:`merge_motion_loras` returns the undo, which puts
back the exact original tensors (bit for bit), so the cached module is clean for the next generation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..weights.adapter import WeightsError
from ..weights.reading import listing, read_file, strip_prefixes
from .keys import MOTION_KEY

_PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0", "to_out.0": "to_out.0"}
_RELEASED = re.compile(r"^(?P<path>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>up|down)\.weight$")
_RESAVED = re.compile(r"^(?P<path>.+)\.(?P<proj>to_q|to_k|to_v|to_out\.0|to_out)\.lora_(?P<part>up|down)\.weight$")
_ALPHA = re.compile(r"^(?P<path>.+)\.(?P<proj>to_q|to_k|to_v|to_out\.0|to_out)\.alpha$")
_UNDERSCORED = re.compile(r"^(?P<level>(?:down|up)_blocks_\d+|mid_block)_motion_modules_(?P<index>\d+)_"
                          r"temporal_transformer_transformer_blocks_(?P<block>\d+)_attention_blocks_(?P<attention>\d+)"
                          r"_(?P<proj>to_q|to_k|to_v|to_out_0|to_out)(?P<rest>\..+)$")
_SPATIAL = re.compile(r"^(lora_unet_|lora_te\d?_|lora_te_|unet\.|text_encoder)|(^|[._])(attentions|resnets)[._]\d")


class MotionLoraError(WeightsError):
    """A motion-LoRA file that cannot be used here; the message is one sentence for the user."""


@dataclass
class LowRank:
    up: torch.Tensor    # (out, rank)
    down: torch.Tensor  # (rank, in)
    scale: float = 1.0

    def delta(self) -> torch.Tensor:
        return (self.up.float() @ self.down.float()) * self.scale


@dataclass
class MotionLora:
    name: str
    # The motion module's parameter name (original layout) -> its low-rank change.
    pairs: dict[str, LowRank]


def load_motion_lora(path) -> MotionLora:
    path = Path(path)
    try:
        raw = read_file(path)
    except WeightsError as error:
        raise MotionLoraError(str(error)) from None
    return motion_lora_from_tensors(raw.tensors, path.name)


def _dotted(key: str) -> str:
    """The re-saved files' underscored layer name in the original dotted path; other keys unchanged."""
    match = _UNDERSCORED.match(key)
    if match is None:
        return key
    level = match["level"].replace("_blocks_", "_blocks.")
    proj = {"to_out_0": "to_out.0"}.get(match["proj"], match["proj"])
    return (f"{level}.motion_modules.{match['index']}.temporal_transformer.transformer_blocks.{match['block']}"
            f".attention_blocks.{match['attention']}.{proj}{match['rest']}")


def motion_lora_from_tensors(tensors: dict[str, torch.Tensor], name: str) -> MotionLora:
    keys = {_dotted(strip_prefixes(key)): value for key, value in tensors.items()}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    unknown = []
    for key, tensor in keys.items():
        match = _RELEASED.match(key) or _RESAVED.match(key)
        alpha = _ALPHA.match(key)
        if match and MOTION_KEY.match(match["path"]):
            target = f"{match['path']}.{_PROJECTIONS[match['proj']]}.weight"
            parts.setdefault(target, {})[match["part"]] = tensor
        elif alpha and MOTION_KEY.match(alpha["path"]):
            alphas[f"{alpha['path']}.{_PROJECTIONS[alpha['proj']]}.weight"] = float(tensor)
        else:
            unknown.append(key)
    if not parts:
        raise MotionLoraError(_not_a_motion_lora(name, list(keys)))
    if unknown:
        raise MotionLoraError(f"{name} holds tensors that are not motion-LoRA pairs: {listing(unknown)}")
    incomplete = sorted(target for target, pair in parts.items() if set(pair) != {"up", "down"})
    if incomplete:
        raise MotionLoraError(f"{name} lacks the up or down half of {listing(incomplete)}")
    pairs = {}
    for target, pair in parts.items():
        up, down = pair["up"], pair["down"]
        if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0]:
            raise MotionLoraError(f"{name} has a pair of mismatched shapes at {target}: up {tuple(up.shape)}, "
                                  f"down {tuple(down.shape)}")
        scale = alphas[target] / down.shape[0] if target in alphas else 1.0
        pairs[target] = LowRank(up, down, scale)
    return MotionLora(name, pairs)


def _not_a_motion_lora(name: str, keys: list[str]) -> str:
    if any(MOTION_KEY.match(key) and "lora" not in key.lower() for key in keys):
        return f"{name} is a motion module, not a motion LoRA: choose it as the motion module"
    if any(_SPATIAL.search(key) for key in keys):
        return (f"{name} is a LoRA for the picture model, not a motion LoRA (its tensors name no motion modules): "
                f"use it in the prompt as <lora:{Path(name).stem}:1>")
    return f"{name} holds no motion-LoRA tensors (first keys: {listing(sorted(keys)[:3])})"


def check_fits(lora: MotionLora, module: nn.Module, module_name: str) -> None:
    """MotionLoraError (one sentence naming both files) unless every pair matches a weight of ``module``."""
    weights = dict(module.named_parameters())
    missing = sorted(target for target in lora.pairs if target not in weights)
    wrong = sorted(target for target, pair in lora.pairs.items()
                   if target in weights and (pair.up.shape[0], pair.down.shape[1]) != tuple(weights[target].shape))
    if missing:
        levels = sorted({target.split(".motion_modules")[0] for target in missing})
        what = f"it changes {len(missing)} projections in {', '.join(levels)}, which that module does not have"
    elif wrong:
        example = lora.pairs[wrong[0]]
        what = (f"{len(wrong)} projections have other sizes, e.g. {wrong[0]} is "
                f"{example.up.shape[0]}x{example.down.shape[1]} in the LoRA and "
                f"{'x'.join(map(str, weights[wrong[0]].shape))} in the module")
    else:
        return
    raise MotionLoraError(f"{lora.name} is a motion LoRA for another motion module than {module_name} ({what}); "
                          f"AnimateDiff's motion LoRAs are made for its v2 SD1.5 module")


def merge_motion_loras(module: nn.Module, loras: Sequence[tuple[MotionLora, float]]) -> Callable[[], None]:
    """Add every LoRA at its strength to ``module``'s weights; returns the undo (exact original tensors back)."""
    weights = dict(module.named_parameters())
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for lora, strength in loras:
                for target, pair in lora.pairs.items():
                    weight = weights[target]
                    if target not in saved:
                        saved[target] = weight.detach().clone()
                    delta = pair.delta().to(weight.device) * strength
                    weight.copy_((weight.float() + delta).to(weight.dtype))
    except BaseException:
        _restore(weights, saved)
        raise
    return lambda: _restore(weights, saved)


def _restore(weights: dict[str, nn.Parameter], saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for target, original in saved.items():
            weights[target].copy_(original.to(weights[target].device))
    saved.clear()
