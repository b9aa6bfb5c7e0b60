"""A Hugging Face hub cache written the way ``huggingface_hub`` writes it, for offline tests.

``models--<org>--<name>/blobs/<etag>`` holds the bytes (etag: sha256 for LFS files, the git blob sha1 for
small text files), ``snapshots/<commit>/<path>`` is a relative symlink to the blob, ``refs/main`` names the
commit.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_LFS_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".bin")


def _etag(name: str, data: bytes) -> str:
    if name.endswith(_LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_folder(cache: Path, repo_id: str) -> Path:
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def add_to_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> Path:
    """Put ``files`` (path in the repository -> bytes) into ``cache`` as one commit; returns its snapshot folder."""
    repo = repo_folder(cache, repo_id)
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / _etag(name, data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def go_offline(monkeypatch, cache: Path) -> None:
    """Offline mode with ``cache`` as the hub cache, for this process and its children; no socket may connect."""
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    for name, value in (("HF_HUB_OFFLINE", True), ("HF_HUB_CACHE", str(cache))):
        monkeypatch.setenv(name, "1" if value is True else value)
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# transformers 5 no longer writes special_tokens_map.json; the hub's tokenizer folders have it.
SPECIAL_TOKENS = (b'{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", '
                  b'"pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}')


def tokenizer_file(tokenizer_folder: Path, name: str) -> bytes:
    """A file of a hub tokenizer folder, from a folder written by ``save_pretrained``."""
    return SPECIAL_TOKENS if name == "special_tokens_map.json" else (tokenizer_folder / name).read_bytes()
