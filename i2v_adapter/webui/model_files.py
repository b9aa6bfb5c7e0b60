"""Adapter weight files: ``models/I2V-Adapter`` plus the folder set in Settings."""
from __future__ import annotations

import os

EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
TRAINING_FREE_LABEL = "none: training-free"
SETTING_KEY = "i2v_adapter_models_path"


def default_folder() -> str:
    from modules import paths

    return os.path.join(paths.models_path, "I2V-Adapter")


def folders() -> list[str]:
    from modules import shared

    extra = (shared.opts.data.get(SETTING_KEY) or "").strip()
    return [default_folder()] + ([extra] if extra else [])


def _files() -> dict[str, str]:
    found = {}
    for folder in folders():
        if not os.path.isdir(folder):
            continue
        for root, _, names in os.walk(folder):
            for name in sorted(names):
                if name.lower().endswith(EXTENSIONS):
                    found.setdefault(os.path.relpath(os.path.join(root, name), folder), os.path.join(root, name))
    return found


def names() -> list[str]:
    return sorted(_files())


def choices() -> list[str]:
    return [TRAINING_FREE_LABEL] + names()


def find(name: str) -> str | None:
    """The path of a weights file given by the name shown in the dropdown (or its base name)."""
    files = _files()
    if name in files:
        return files[name]
    by_base = {os.path.basename(n): p for n, p in files.items()}
    return by_base.get(os.path.basename(name))


def to_param(choice: str) -> str:
    return "" if choice in ("", None, TRAINING_FREE_LABEL) else choice


def to_choice(model: str) -> str:
    return model or TRAINING_FREE_LABEL
