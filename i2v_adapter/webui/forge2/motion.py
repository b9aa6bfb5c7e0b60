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
from ...motion.keys import is_hotshot_key
from ...motion.module import HOTSHOT_WINDOW
from ...motion.schedule import ANIMATEDIFF_BETAS, BetaSchedule
from ...weights.reading import strip_prefixes

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
                                "v3_sd15_mm.ckpt for SD1.5, mm_sdxl_v10_beta.ckpt for SDXL) in models/AnimateDiff and "
                                "press the refresh button.")
    if not name:
        return next(iter(files.values()))
    path = files.get(os.path.basename(name))
    if path is None:
        raise MotionModuleError(f"I2V-Adapter: no motion module named '{name}' in models/AnimateDiff "
                                f"(available: {', '.join(files)}).")
    return path


def trained_window(name: str) -> int | None:
    """HotShot-XL's 8 frames for a HotShot file (told from its safetensors keys without loading it), else None:
    the panel sets the context length to it, the most HotShot takes."""
    path = _files().get(os.path.basename(name or ""))
    if not path or not path.lower().endswith(".safetensors"):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            hotshot = any(is_hotshot_key(strip_prefixes(key)) for key in handle.keys())
    except Exception:  # an unreadable file: the generation says why in its own sentence
        return None
    return HOTSHOT_WINDOW if hotshot else None


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


def base_model(sd_model) -> str | None:
    """'SD1.5' or 'SDXL' (the picture models motion modules are made for), else None."""
    if getattr(sd_model, "is_sd1", False):
        return "SD1.5"
    return "SDXL" if getattr(sd_model, "is_sdxl", False) else None


def refusal(sd_model) -> str | None:
    """One sentence when the loaded model cannot get a motion module, else None."""
    if base_model(sd_model) is None:
        kind = next((name for name in ("sd2", "sd3") if getattr(sd_model, f"is_{name}", False)), None)
        loaded = kind.upper() if kind else type(sd_model).__name__
        return (f"I2V-Adapter animates SD1.5 and SDXL checkpoints (the motion modules exist for those): "
                f"load one of them (the loaded one is {loaded}).")
    storage = getattr(sd_model.forge_objects.unet.model, "storage_dtype", None)
    if isinstance(storage, str) and storage.lower() == "gguf":
        # The file decides GGUF storage; the 'Diffusion in Low Bits' setting cannot undo it.
        return ("I2V-Adapter cannot animate a UNet stored as GGUF (the loaded checkpoint is a .gguf file): "
                "load a full-precision checkpoint (.safetensors or .ckpt).")
    if isinstance(storage, str) and storage.lower() in QUANTISED_STORAGE:
        return (f"I2V-Adapter cannot animate a UNet stored as {storage.upper()}: set 'Diffusion in Low Bits' to "
                f"Automatic or a float format, or load a full-precision checkpoint.")
    return None


def mismatch(sd_model, module: MotionModule, module_name: str) -> str | None:
    """One sentence naming both files when the motion module is made for another picture model, else None."""
    loaded = base_model(sd_model)
    if loaded is None or loaded == module.base.name:
        return None
    info = getattr(sd_model, "sd_checkpoint_info", None)
    checkpoint = os.path.basename(getattr(info, "filename", "") or "") or "the loaded checkpoint"
    families = "AnimateDiff-SDXL or HotShot-XL" if loaded == "SDXL" else "AnimateDiff v1-v3 or AnimateLCM"
    return (f"I2V-Adapter: {module_name} is a motion module for {module.base.name} and {checkpoint} is an {loaded} "
            f"checkpoint: choose a motion module for {loaded} ({families}) or load an {module.base.name} checkpoint.")


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
    """The motion module's noise schedule on the predictor for one generation (AnimateDiff's linear betas, or
    AnimateDiff-SDXL's scaled-linear ones to 0.020); :meth:`restore` puts Forge's back.

    Forge's timestep samplers (DDIM, PLMS, UniPC) keep ``alphas_cumprod`` on the model, derived from the
    predictor when the sampler is made (img2img makes it before sampling): it follows the sigmas both ways.
    """

    def __init__(self, predictor, sd_model=None, schedule: BetaSchedule = ANIMATEDIFF_BETAS):
        self.predictor = predictor
        self.sd_model = sd_model
        self.schedule = schedule
        self.original: torch.Tensor | None = None

    def apply(self) -> None:
        if self.original is None:
            global _applied
            self.original = self.predictor.sigmas.clone()
            _applied = self
        self._set(animatediff_sigmas(self.schedule).to(self.original.device))

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
