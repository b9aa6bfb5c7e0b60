"""Adapter weights loaded once per file content (hash), reused across generations."""
from __future__ import annotations

import hashlib
import os

from .adapter import AdapterWeights
from .files import load_adapter_weights

_hashes: dict[tuple[str, int, float], str] = {}
_weights: dict[str, AdapterWeights] = {}


def file_hash(path: str) -> str:
    """SHA-256 of the file (first 10 hex digits, as the WebUI shows model hashes), cached by size and mtime."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()[:10]
    return _hashes[key]


def cached_adapter_weights(path: str) -> tuple[AdapterWeights, str]:
    """The weights in ``path`` and the file's hash; one copy in memory per distinct file."""
    digest = file_hash(path)
    if digest not in _weights:
        _weights.clear()  # keep one adapter in memory: they are ~100 MB each
        _weights[digest] = load_adapter_weights(path)
    return _weights[digest], digest
