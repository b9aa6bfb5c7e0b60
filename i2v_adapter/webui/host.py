"""Which WebUI this is, told by what can be imported (never by version strings)."""
from __future__ import annotations

import importlib.util
from functools import lru_cache

A1111, CLASSIC_FORGE, NEW_FORGE = "a1111", "forge", "new-forge"


def _importable(name: str) -> bool:
    """Whether ``name`` can be imported, found without running it (Forge's modules probe the GPU on import)."""
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # the parent package is missing or fails to import
        return False


@lru_cache(maxsize=None)
def host() -> str:
    """``forge`` (ldm_patched: classic Forge, reForge, Forge Classic), ``new-forge`` (backend/) or ``a1111``."""
    if _importable("modules_forge.unet_patcher") and _importable("ldm_patched.modules.model_patcher"):
        return CLASSIC_FORGE
    if _importable("backend.patcher.unet"):
        return NEW_FORGE
    return A1111
