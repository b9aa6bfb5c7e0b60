"""The host-neutral life cycle of a generation: parse the arguments, check, begin, refuse, clean up.

Exceptions raised in Script methods are caught by the WebUI, which then generates
without us. To stop a generation with a message, the error is raised from a wrapper
of ``p.init``, which the WebUI calls outside its script guards; as an HTTPException it
reaches API clients as a clean 422 with the sentence, and the UI shows it in red.
Every host's generation is a :class:`Lifecycle`: one is active at a time, and :func:`sweep`
undoes whatever an earlier one left.
"""
from __future__ import annotations

import logging

import torch
from fastapi import HTTPException

from ..hooks import remove_all_hooks
from ..image_input import ImageInputError
from ..params import I2VParams, ParamsError
from . import animatediff, refusal

log = logging.getLogger("i2v_adapter")


class I2VAdapterError(HTTPException):
    """Stops a generation; the message is one sentence for the user."""

    def __init__(self, message: str):
        super().__init__(status_code=422, detail=message)

    def __str__(self) -> str:
        return self.detail


_active: "Lifecycle | None" = None


def active_generation() -> "Lifecycle | None":
    return _active


def sweep(unet=None) -> None:
    """Remove everything any earlier generation may have left: hooks, wrappers, state."""
    if _active is not None:
        _active.stop()
    remove_all_hooks(*([unet] if unet is not None else []))
    animatediff.restore_stale_scheduler()
    animatediff.restore_writer()
    from . import batch_tab  # here: it needs this module's stop_with_message

    batch_tab.restore()


STOP_MESSAGE = "i2v_adapter_stop_message"


def stop_with_message(p, message: str) -> None:
    """Make the generation fail with ``message`` as soon as the WebUI initialises it (first message wins)."""
    if getattr(p, STOP_MESSAGE, None):
        return
    setattr(p, STOP_MESSAGE, message)
    original_init = p.init

    def init(*args, **kwargs):
        p.init = original_init
        if refusal.end_without_pictures(p, message):
            return
        raise I2VAdapterError(message)

    p.init = init
    log.error(message)


class Lifecycle:
    """What every generation shares: being the active one, wrappers of ``p``, and an undo list that
    :meth:`stop` runs whatever happened. The sampler callbacks do nothing unless a subclass needs them."""

    def __init__(self, p):
        self.p = p
        self._undo = []

    def activate(self) -> None:
        global _active
        _active = self
        self._wrap(self.p, "close", self._close)

    def stop(self) -> None:
        global _active
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:  # cleanup must go on whatever one step did
                log.exception("I2V-Adapter: cleanup step failed")
        if _active is self:
            _active = None

    def _wrap(self, obj, name: str, make_wrapper) -> None:
        had_own = name in vars(obj)
        original = getattr(obj, name)
        setattr(obj, name, make_wrapper(original))

        def undo():
            if had_own:
                setattr(obj, name, original)
            else:
                vars(obj).pop(name, None)

        self._undo.append(undo)

    def _close(self, original):
        def close(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            finally:
                self.stop()

        return close

    def on_cfg_denoiser(self, params) -> None:
        pass

    def on_cfg_after_cfg(self, params) -> None:
        pass

    def post_sample(self, samples: torch.Tensor) -> None:
        pass

    def match_colors(self, images: list) -> list:
        return images


def begin(p, params: I2VParams, generation_class, check) -> "Lifecycle | None":
    """Validate and start a generation; on bad input make the generation stop with the message."""
    if getattr(p, STOP_MESSAGE, None):
        return None
    try:
        generation = generation_class(p, params, check(p, params))
        generation.start()
        return generation
    except I2VAdapterError as error:
        stop_with_message(p, error.detail)
    except (ImageInputError, ParamsError) as error:
        stop_with_message(p, str(error))
    except Exception as error:  # never let a failure silently turn into a plain generation
        log.exception("I2V-Adapter could not start")
        stop_with_message(p, f"I2V-Adapter could not start: {error}")
    sweep()
    return None


def parse_arguments(args) -> I2VParams:
    """The script's arguments: one dict (API) or the UI values in field order."""
    if args and isinstance(args[0], dict):
        return I2VParams.from_dict(args[0])
    return I2VParams.from_args(args)

