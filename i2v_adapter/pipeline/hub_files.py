"""The standard model files, fetched on first use from the Hugging Face hub into its usual cache.

Each default is a fixed list of files of one repository. Files already in the cache are used without asking
the network (the cache is the one diffusers and transformers share, so a model fetched by either counts);
missing ones are downloaded by ``huggingface_hub`` with its progress bars. When they cannot be fetched
(offline mode, no connection), one sentence names every missing file and the flag that replaces it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class HubFiles:
    what: str                       # for the user: "the SD1.5 base model"
    flag: str                       # the command-line flag that gives a local replacement
    repo_id: str
    filenames: tuple[str, ...]
    folder: bool = False            # the caller wants the snapshot folder holding the files, not one file

    def summary(self) -> str:
        """The files for a sentence: names, or a folder's top-level parts (``unet/, vae/, ...``)."""
        if not self.folder:
            return ", ".join(self.filenames)
        return ", ".join(dict.fromkeys(name.split("/", 1)[0] + ("/" if "/" in name else "")
                                       for name in self.filenames))


# The SD1.5 base as a diffusers folder, fp16 weights (2.1 GB instead of the 4.3 GB single file); the folder
# carries its own tokenizer. Loading casts to the run dtype, so fp16 files serve CPU runs in fp32 too.
SD15_BASE = HubFiles(
    "the SD1.5 base model", "--checkpoint", "stable-diffusion-v1-5/stable-diffusion-v1-5",
    ("unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
     "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
     "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
     "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
     "tokenizer/special_tokens_map.json"),
    folder=True,
)
MOTION_MODULE = HubFiles("the AnimateDiff motion module", "--motion-module", "guoyww/animatediff",
                         ("mm_sd_v15_v2.ckpt",))
ADAPTER = HubFiles("the I2V-Adapter weights", "--adapter", "space-xun/i2v_adapter", ("i2v_module.pth",))
# SD1.5's text encoder is CLIP ViT-L/14's; a single-file checkpoint holds its weights but not its vocabulary.
CLIP_TOKENIZER = HubFiles(
    "the CLIP tokenizer", "--tokenizer", "openai/clip-vit-large-patch14",
    ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"),
    folder=True,
)


class HubFilesUnavailable(OSError):
    """Default files that are neither in the cache nor fetchable; the message is one sentence."""


def _local_path(files: HubFiles, paths: list[str]) -> Path:
    first = Path(paths[0])
    if not files.folder:
        return first
    # The snapshot folder: as many levels up as the first file's name has parts.
    return first.parents[len(PurePosixPath(files.filenames[0]).parts) - 1]


def cached_path(files: HubFiles) -> Path | None:
    """The local path when every file is in the cache (in one snapshot of the main branch), else None."""
    from huggingface_hub import try_to_load_from_cache

    paths = [try_to_load_from_cache(files.repo_id, name) for name in files.filenames]
    if not all(isinstance(path, str) for path in paths):
        return None
    # One revision resolves every name, so all the files lie in one snapshot folder.
    return _local_path(files, paths)


def cache_folder() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def unavailable_sentence(missing: list[HubFiles], reason: str) -> str:
    listed = "; ".join(f"{files.what} ({files.repo_id}: {files.summary()})" for files in missing)
    flags = ", ".join(files.flag for files in missing)
    return (f"{reason}, and the Hugging Face cache ({cache_folder()}) lacks {listed}: connect once so they can be "
            f"fetched, or give local files with {flags}")


def fetch(needed: list[HubFiles], log=None) -> list[Path]:
    """Local paths of ``needed``, in order: from the cache, else downloaded (a line on ``log`` says which)."""
    from huggingface_hub import constants, hf_hub_download

    log = log or sys.stderr
    found = {files: cached_path(files) for files in needed}
    missing = [files for files, path in found.items() if path is None]
    if missing and constants.HF_HUB_OFFLINE:
        raise HubFilesUnavailable(unavailable_sentence(missing, "offline (HF_HUB_OFFLINE is set)"))
    for index, files in enumerate(missing):
        print(f"fetching {files.what} from {files.repo_id} ({files.summary()}) into {cache_folder()}", file=log)
        try:
            paths = [hf_hub_download(files.repo_id, name) for name in files.filenames]
        except Exception as error:  # connection, HTTP, disk: all end in the same sentence
            reason = f"cannot fetch from the hub ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
            raise HubFilesUnavailable(unavailable_sentence(missing[index:], reason)) from error
        found[files] = _local_path(files, paths)
    return [found[files] for files in needed]
