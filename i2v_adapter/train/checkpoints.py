"""Checkpoints of a run, and the adapter file it writes.

A checkpoint is a folder ``checkpoint-000500/`` in the checkpoints folder: accelerate's state (adapter
parameters, optimizer, gradient scaler; whatever the user's accelerate config needs), ``adapter.safetensors``
(usable as it is) and ``train_state.json`` (the step and the run's settings). Resuming needs only the step:
the data and noise of every later sample follow from the seed and the sample number (see data.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..weights.adapter import AdapterWeights
from ..weights.files import save_adapter_weights
from .settings import SAMPLE_DEFINING, TrainSettings

STATE_FILE = "train_state.json"
ADAPTER_FILE = "adapter.safetensors"
_PREFIX = "checkpoint-"


def checkpoint_folder(root: Path, step: int) -> Path:
    return Path(root) / f"{_PREFIX}{step:06d}"


def adapter_metadata(settings: TrainSettings, step: int) -> dict[str, str]:
    """What ``inspect`` shows about a trained file: base model and motion module by name, steps, size."""
    return {
        "trained_by": "i2v-adapter train",
        "base_model": Path(settings.checkpoint.rstrip("/")).name,
        "motion_module": Path(settings.motion_module).name,
        "steps": str(step),
        "resolution": str(settings.resolution),
        "frames": str(settings.frames),
        "stride": str(settings.stride),
        "learning_rate": f"{settings.learning_rate:g}",
        "ip_adapter": Path(settings.ip_adapter).name if settings.ip_adapter else "none",
    }


def write_adapter(weights: AdapterWeights, path, settings: TrainSettings, step: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_adapter_weights(weights, path, adapter_metadata(settings, step))


def save_checkpoint(accelerator, weights: AdapterWeights, settings: TrainSettings, step: int) -> Path:
    """Every process calls this (accelerate gathers what it must); the main process writes our two files."""
    folder = checkpoint_folder(settings.checkpoints_folder, step)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        write_adapter(weights, folder / ADAPTER_FILE, settings, step)
        state = {"step": step, "settings": settings.to_dict()}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
    accelerator.wait_for_everyone()
    return folder


def find_checkpoint(path) -> Path:
    """``path`` itself if it is a checkpoint, else its newest ``checkpoint-*`` folder."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = sorted(p for p in path.glob(f"{_PREFIX}*") if (p / STATE_FILE).is_file()) if path.is_dir() else []
    if not found:
        raise ValueError(f"{path}: not a checkpoint folder and holds no {_PREFIX}* checkpoints")
    return found[-1]


def load_checkpoint(accelerator, path, settings: TrainSettings) -> tuple[int, list[str]]:
    """Restore a checkpoint into the prepared adapter and optimizer: ``(step, notes)``."""
    folder = find_checkpoint(path)
    state = json.loads((folder / STATE_FILE).read_text())
    try:
        accelerator.load_state(str(folder))
    except (RuntimeError, KeyError, ValueError) as error:  # torch's size mismatch, a missing part, ...
        message = " ".join(str(error).split())[:300]
        raise ValueError(f"{folder} does not fit this run (another base model?): {message}") from None
    before = state.get("settings", {})
    changed = [name for name in SAMPLE_DEFINING if name in before and before[name] != getattr(settings, name)]
    notes = [f"{name} was {before[name]}, now {getattr(settings, name)}: later samples differ from the "
             "uninterrupted run" for name in changed]
    return int(state["step"]), notes
