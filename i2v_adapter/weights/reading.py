"""Reading raw tensors from a weights file, safely: safetensors, or PyTorch's weights-only unpickler.

Shared by every weight family (adapter, IP-Adapter, motion modules, checkpoints); nothing here knows what
the tensors mean.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapter import WeightsError

# Prefixes that training wrappers put in front of UNet keys (DataParallel, pipelines, ldm checkpoints).
# Only these are dropped: a key with any other prefix is unknown, not silently taken.
_KEY_PREFIXES = ("module.", "unet.", "model.diffusion_model.")

_LIST_LIMIT = 10


# ---------------------------------------------------------------- reading raw tensors


@dataclass
class RawFile:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    # Entries beside "state_dict" in a training checkpoint (epoch, global_step, ...).
    wrapper_keys: list[str] = field(default_factory=list)


def looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with a little-endian u64 header length and a JSON object."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= header_length < 100_000_000


def read_safetensors(path: Path) -> RawFile:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # the Rust reader raises its own error types
        raise WeightsError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {one_line(error)}"
        ) from None
    return RawFile(tensors, metadata)


_UNREADABLE = "{path} is not a readable weights file (corrupt, truncated, or not a PyTorch/safetensors file)"


def load_pickle(path: Path):
    """The unpickled object, read with the weights-only unpickler; any failure is a :class:`WeightsError`."""
    try:
        with warnings.catch_warnings():
            # Old pickle protocols are fine for us; torch's note about them would only confuse users.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # torch.serialization.load, not torch.load: the WebUI replaces torch.load with a checker that
            # rejects files written by current torch; weights_only=True is our own safe unpickler.
            # Zip-format files (every torch.save since 1.6) are mapped, not read: a large file's tensors are
            # paged in as they are used instead of copied whole; legacy pickles cannot be mapped.
            loaded = torch.serialization.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):
            raise WeightsError(
                f"{path} contains Python objects other than tensors; refusing to load it for safety"
            ) from None
        raise WeightsError(_UNREADABLE.format(path=path)) from None
    except Exception:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged or foreign files
        raise WeightsError(_UNREADABLE.format(path=path)) from None
    return loaded


def read_pickle(path: Path) -> RawFile:
    return _unwrap(path, load_pickle(path))


def _unwrap(path: Path, loaded) -> RawFile:
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a dictionary of tensors")
    wrapper_keys = []
    if isinstance(loaded.get("state_dict"), dict):
        wrapper_keys = [str(key) for key in loaded if key != "state_dict"]
        loaded = loaded["state_dict"]
    not_tensors = [f"{key} ({type(value).__name__})" for key, value in loaded.items()
                   if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise WeightsError(f"{path} holds entries that are not tensors: {listing(not_tensors)}")
    return RawFile(dict(loaded), wrapper_keys=wrapper_keys)


def check_weights_path(path: Path) -> None:
    if path.is_dir():
        raise WeightsError(
            f"{path} is a folder; give the weights file inside it (e.g. diffusion_pytorch_model.safetensors)"
        )
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path} is empty")


def read_file(path) -> RawFile:
    path = Path(path)
    check_weights_path(path)
    raw = read_safetensors(path) if looks_like_safetensors(path) else read_pickle(path)
    if not raw.tensors:
        raise WeightsError(f"{path} holds no tensors")
    return raw


def strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _KEY_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f" (and {more} more)" if more > 0 else "")


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__
