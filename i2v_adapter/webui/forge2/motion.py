"""Forge 2: motion-module files, and the motion module put on a cloned UnetPatcher for one sampling.

Everything goes through Forge's own patch points, so a clone dropped by Forge after sampling leaves
nothing behind: each slot runs from a block inner modifier, v1's GroupNorm over frames from the
group-norm wrapper, long videos from the UNet function wrapper (see ``forge2_windows``), and the module
rides with the UNet through the memory manager. The one shared thing changed is the predictor's noise
schedule (AnimateDiff was trained on plain linear betas): :class:`ScheduleOverride` sets it and puts
Forge's back, and :func:`restore_schedule` does so for any generation that never reached its cleanup.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
from threading import Lock

import torch

from ...motion import MotionModule, MotionModuleError, animatediff_sigmas, block_inner_modifier, group_norm_wrapper, load_motion_module

log = logging.getLogger("i2v_adapter")

EXTENSIONS = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
SETTING_KEY = "i2v_adapter_motion_path"


# -- files ------------------------------------------------------------------------------------------

def weight_files(models_subfolder: str, setting_key: str) -> dict[str, str]:
    """Weight files by name in ``models/<models_subfolder>`` and the folder the setting names (first name wins)."""
    from modules import paths, shared

    extra = (shared.opts.data.get(setting_key) or "").strip()
    found = {}
    for folder in [os.path.join(paths.models_path, models_subfolder)] + ([extra] if extra else []):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(folder, name)):
                    found.setdefault(name, os.path.join(folder, name))
    return found


def _files() -> dict[str, str]:
    return weight_files("AnimateDiff", SETTING_KEY)


def names() -> list[str]:
    return sorted(_files())


def find(name: str) -> str:
    """The path of the motion module named ``name`` (empty: the first one); MotionModuleError if none."""
    files = _files()
    if not files:
        raise MotionModuleError("I2V-Adapter needs an AnimateDiff motion module on this Forge: put one (e.g. "
                                "mm_sd_v15_v2.ckpt or v3_sd15_mm.ckpt) in models/AnimateDiff and press the refresh button.")
    if not name:
        return next(iter(files.values()))
    path = files.get(os.path.basename(name))
    if path is None:
        raise MotionModuleError(f"I2V-Adapter: no motion module named '{name}' in models/AnimateDiff "
                                f"(available: {', '.join(files)}).")
    return path


_cache: dict[str, tuple[float, MotionModule]] = {}
_cache_lock = Lock()
# The one ModelPatcher per cached module that Forge's memory manager knows it by (see add_motion_module).
_patchers: dict[int, object] = {}


def cached_motion_module(path: str) -> MotionModule:
    """The module in ``path``, loaded once per file version; one module is kept at a time (they are large)."""
    stamp = os.path.getmtime(path)
    with _cache_lock:
        entry = _cache.get(path)
        if entry is None or entry[0] != stamp:
            for _, old in _cache.values():
                _release(old)
            _cache.clear()
            module = load_motion_module(path).eval().requires_grad_(False)
            _cache[path] = (stamp, module)
            return_freed_memory()  # the file's tensors (2.6 GB for an ipplus pickle) are garbage by now
            log.info("I2V-Adapter: loaded %s: %s", os.path.basename(path), module.describe())
        return _cache[path][1]


# -- what this Forge can serve ----------------------------------------------------------------------

QUANTISED_STORAGE = ("nf4", "fp4")  # GGUF has its own sentence: the file decides it, not a setting


def refusal(sd_model) -> str | None:
    """One sentence when the loaded model cannot get a motion module, else None."""
    if not getattr(sd_model, "is_sd1", False):
        kind = next((name for name in ("sdxl", "sd2", "sd3") if getattr(sd_model, f"is_{name}", False)), None)
        loaded = kind.upper() if kind else type(sd_model).__name__
        return (f"I2V-Adapter animates SD1.5 checkpoints only (AnimateDiff's SD1.5 motion modules): "
                f"load an SD1.5 checkpoint (the loaded one is {loaded}).")
    storage = getattr(sd_model.forge_objects.unet.model, "storage_dtype", None)
    if isinstance(storage, str) and storage.lower() == "gguf":
        # The file decides GGUF storage; the 'Diffusion in Low Bits' setting cannot undo it.
        return ("I2V-Adapter cannot animate a UNet stored as GGUF (the loaded checkpoint is a .gguf file): "
                "load a full-precision SD1.5 checkpoint (.safetensors or .ckpt).")
    if isinstance(storage, str) and storage.lower() in QUANTISED_STORAGE:
        return (f"I2V-Adapter cannot animate a UNet stored as {storage.upper()}: set 'Diffusion in Low Bits' to "
                f"Automatic or a float format, or load a full-precision checkpoint.")
    return None


# -- the patches ------------------------------------------------------------------------------------

def add_motion_module(unet, module: MotionModule) -> None:
    """Put ``module`` on the UnetPatcher clone ``unet``: its slots, v1's norms, the memory manager."""
    dtype = unet.model.computation_dtype
    module.to(dtype=dtype)  # never the storage dtype: that may be fp8 or a quantised format
    unet.add_block_inner_modifier(block_inner_modifier(module.slots()))
    if module.groupnorm_across_frames:
        unet.set_group_norm_wrapper(group_norm_wrapper())
    # One patcher per module, not a new one per sampling (what add_extra_torch_module_during_sampling makes):
    # Forge 2 keeps an entry per patcher it ever loaded, and each entry would keep its module alive.
    unet.add_extra_model_patcher_during_sampling(_patcher(unet, module))


def _patcher(unet, module: MotionModule):
    patcher = _patchers.get(id(module))
    if patcher is None:
        from backend.patcher.base import ModelPatcher

        patcher = ModelPatcher(model=module, load_device=unet.load_device, offload_device=unet.offload_device)
        _patchers[id(module)] = patcher
    return patcher


def _release(module: MotionModule) -> None:
    """Make Forge's memory manager drop a module the cache let go, so that its memory is freed."""
    patcher = _patchers.pop(id(module), None)
    if patcher is not None:
        from backend import memory_management

        memory_management.unload_model_clones(patcher)
    # Forge's patcher leaves module.lora_loader, which points back at the module: a cycle that only Python's
    # rare full collection frees, so every module ever loaded stayed in memory (1.7 GB each). The collection
    # frees the UNet clones of past samplings, cycles that still reach the module, before the cache lets go.
    module.__dict__.pop("lora_loader", None)
    gc.collect()


def return_freed_memory() -> None:
    """Hand freed heap memory back to the system. glibc keeps what a large load freed for later use, so each
    ipplus file read left about 1.5 GB more in the WebUI's process; elsewhere this does nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: macOS, Windows, musl
        pass


class ScheduleOverride:
    """AnimateDiff's noise schedule on the predictor for one generation; :meth:`restore` puts Forge's back.

    Forge's timestep samplers (DDIM, PLMS, UniPC) keep ``alphas_cumprod`` on the model, derived from the
    predictor when the sampler is made (img2img makes it before sampling): it follows the sigmas both ways.
    """

    def __init__(self, predictor, sd_model=None):
        self.predictor = predictor
        self.sd_model = sd_model
        self.original: torch.Tensor | None = None

    def apply(self) -> None:
        if self.original is None:
            global _applied
            self.original = self.predictor.sigmas.clone()
            _applied = self
        self._set(animatediff_sigmas().to(self.original.device))

    def restore(self) -> None:
        global _applied
        if self.original is not None:
            self._set(self.original)
            self.original = None
        if _applied is self:
            _applied = None

    def _set(self, sigmas: torch.Tensor) -> None:
        self.predictor.set_sigmas(sigmas)
        if self.sd_model is not None and hasattr(self.sd_model, "alphas_cumprod"):
            self.sd_model.alphas_cumprod = 1.0 / (sigmas ** 2.0 + 1.0)


_applied: ScheduleOverride | None = None


def restore_schedule() -> None:
    """Put back a schedule a generation left set (it failed before its cleanup, or the scripts reloaded)."""
    if _applied is not None:
        log.warning("I2V-Adapter: restoring the noise schedule an earlier generation left set")
        _applied.restore()


def add_settings():
    from modules import shared

    shared.opts.add_option(SETTING_KEY, shared.OptionInfo(
        "", "Extra folder for AnimateDiff motion modules (besides models/AnimateDiff; Forge 2)",
        section=("i2v_adapter", "I2V-Adapter")))
