"""Forge 2: videos longer than one window, through the UNet function wrapper.

Forge calls the wrapper with the whole batch ([uncond frames | cond frames], or one of them) and the
conditioning already computed for every row, ControlNet's residuals included. Each window takes its rows
of every chunk and of every per-row tensor, runs the UNet (or the wrapper that was there before), and
adds its result; frames in more than one window get the mean. Windows holding frame 0 run first, so the
first-frame branch can keep frame 0's keys/values for the windows without it (the layout's bank).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ...layout import FrameLayout, Window, frame_zero_windows_first


def _rows_of(chunks: int, frames: int, window: Sequence[int]) -> torch.Tensor:
    return torch.tensor([chunk * frames + frame for chunk in range(chunks) for frame in window])


def _take(value, rows: torch.Tensor, total: int):
    """``value``'s rows of this window when it has one per row of the batch; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == total:
        return value[rows.to(value.device)]
    return value


def _window_options(options: dict, rows: torch.Tensor, frame_rows: torch.Tensor, total: int, frames: int) -> dict:
    """``transformer_options`` narrowed to the window: per-row marks and indices must match its rows."""
    options = dict(options)
    if isinstance(options.get("cond_mark"), torch.Tensor):
        options["cond_mark"] = _take(options["cond_mark"], rows, total)
        mark = options["cond_mark"]
        options["cond_indices"] = [i for i, m in enumerate(mark.tolist()) if m == 0]
        options["uncond_indices"] = [i for i, m in enumerate(mark.tolist()) if m != 0]
    if isinstance(options.get("sigmas"), torch.Tensor):
        options["sigmas"] = _take(options["sigmas"], frame_rows, frames)
    return options


def window_conditioning(c: dict, rows: torch.Tensor, frame_rows: torch.Tensor, total: int, frames: int) -> dict:
    """The UNet's keyword arguments for one window's rows (control lists fresh: the UNet pops them)."""
    out = {}
    for key, value in c.items():
        if key == "transformer_options":
            out[key] = _window_options(value, rows, frame_rows, total, frames)
        elif key == "control" and isinstance(value, dict):
            out[key] = {name: [_take(t, rows, total) for t in tensors] for name, tensors in value.items()}
        else:
            out[key] = _take(value, rows, total)
    return out


def window_wrapper(windows: list[list[int]], frames: int, layout: FrameLayout,
                   previous: Callable | None = None) -> Callable:
    """A ``model_function_wrapper`` running the UNet window by window; calls of other sizes pass through.

    ``previous``: the wrapper another extension set before (Forge has one slot); each window goes through it.
    """

    def run(apply_model, args):
        return previous(apply_model, args) if previous is not None else apply_model(args["input"], args["timestep"], **args["c"])

    ordered = frame_zero_windows_first(windows, layout.last_frame)  # keyframes' windows first, once

    def window_part(args, window, rows, total):
        return {"input": args["input"][rows.to(args["input"].device)], "timestep": _take(args["timestep"], rows, total),
                "c": window_conditioning(args["c"], rows, torch.tensor(window), total, frames),
                "cond_or_uncond": args["cond_or_uncond"]}

    def run_windows(apply_model, args):
        x, chunks = args["input"], len(args["cond_or_uncond"])
        if x.shape[0] != chunks * frames:
            return run(apply_model, args)
        total = x.shape[0]
        out = torch.zeros_like(x)
        count = torch.zeros(total, device=x.device, dtype=x.dtype)
        prime = layout.priming_window(ordered)
        if prime is not None:  # its result is dropped: it only stores the last keyframe's keys/values
            with layout.priming():
                layout.set_window(Window.from_frames(prime, layout.last_frame))
                run(apply_model, window_part(args, prime, _rows_of(chunks, frames, prime), total))
        for window in ordered:
            rows = _rows_of(chunks, frames, window)
            device_rows = rows.to(x.device)
            layout.set_window(Window.from_frames(window, layout.last_frame))
            out.index_add_(0, device_rows, run(apply_model, window_part(args, window, rows, total)).to(out.dtype))
            count.index_add_(0, device_rows, torch.ones(len(rows), device=x.device, dtype=x.dtype))
        return out / count.view(-1, *([1] * (x.ndim - 1)))

    return run_windows
