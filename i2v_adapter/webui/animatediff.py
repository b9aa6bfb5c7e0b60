"""sd-webui-animatediff, seen from outside: its argument, its geometry, its window scheduler."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ..layout import FrameLayout, Window, frame_zero_windows_first

SCHEDULER_MODULE = "scripts.animatediff_infv2v"
OUTPUT_MODULE = "scripts.animatediff_output"


@dataclass(frozen=True)
class VideoGeometry:
    frames: int  # rows of p's latent batch = frames of the video
    video_length: int
    context_length: int

    @property
    def windowed(self) -> bool:
        return self.frames > self.context_length


def _argument(p):
    for script in getattr(p.scripts, "alwayson_scripts", []):
        if script.title().lower() == "animatediff":
            return p.script_args[script.args_from]
    return None


def _read(arg, name, default=None):
    return arg.get(name, default) if isinstance(arg, dict) else getattr(arg, name, default)


def has_own_last_frame(p) -> bool:
    """Whether AnimateDiff's own 'last frame' picture is set (it blends B into the start latents of img2img)."""
    arg = _argument(p)
    value = _read(arg, "last_frame") if arg is not None else None
    return value is not None and not (isinstance(value, str) and not value.strip())


def installed(p) -> bool:
    return _argument(p) is not None


def geometry(p) -> VideoGeometry | None:
    """The video AnimateDiff will make, or None when AnimateDiff is absent or off.

    AnimateDiff's own before_process has run by now and set ``p.batch_size`` to the frame count.
    """
    arg = _argument(p)
    if arg is None or not _read(arg, "enable", False):
        return None
    context = int(_read(arg, "batch_size", 16) or 16)
    video_length = int(_read(arg, "video_length", 0) or p.batch_size)
    return VideoGeometry(frames=int(p.batch_size), video_length=video_length, context_length=min(context, p.batch_size))


def wrap_window_scheduler(layout: FrameLayout):
    """Make AnimateDiff's context scheduler run frame-0 windows first and tell the layout each window.

    Returns a function that restores the scheduler, or None when AnimateDiff's scheduler is not loaded.
    """
    module = sys.modules.get(SCHEDULER_MODULE)
    scheduler = getattr(module, "AnimateDiffInfV2V", None)
    if scheduler is None or "uniform" not in scheduler.__dict__:
        return None
    original = scheduler.__dict__["uniform"]
    windows_of = original.__func__ if isinstance(original, staticmethod) else original

    def uniform(*args, **kwargs):
        for window in frame_zero_windows_first(windows_of(*args, **kwargs), layout.last_frame):
            layout.set_window(Window.from_frames(window, layout.last_frame))
            yield window

    uniform.i2v_adapter_original = original
    scheduler.uniform = staticmethod(uniform)

    def restore():
        if getattr(scheduler.__dict__.get("uniform"), "__func__", None) is uniform:
            scheduler.uniform = original

    return restore


def restore_stale_scheduler() -> None:
    """Undo a wrapper left by a generation that never reached its cleanup (e.g. before a reload)."""
    scheduler = getattr(sys.modules.get(SCHEDULER_MODULE), "AnimateDiffInfV2V", None)
    while scheduler is not None:
        current = getattr(scheduler.__dict__.get("uniform"), "__func__", None)
        original = getattr(current, "i2v_adapter_original", None)
        if original is None:
            return
        scheduler.uniform = original


def _writer():
    return getattr(sys.modules.get(OUTPUT_MODULE), "AnimateDiffOutput", None)


def _wrap_writer(method: str, make_wrapper) -> None:
    """Replace AnimateDiff's writer ``method`` by ``make_wrapper(original)`` until the next sweep
    (:func:`restore_writer`): AnimateDiff may write its files after this extension's own postprocess ended."""
    writer = _writer()
    current = writer.__dict__.get(method) if writer is not None else None
    if current is None:
        return
    original = getattr(current, "i2v_adapter_original", current)
    wrapper = make_wrapper(original)
    wrapper.i2v_adapter_original = original
    setattr(writer, method, wrapper)


def write_loops_once() -> None:
    """Make AnimateDiff write each video without its last frame (a loop's last frame repeats frame 0), so
    that the files play seamlessly. Its writer hands each video's frame list to ``_add_reverse`` first."""
    def make(original):
        def add_reverse(self, params, frame_list):
            return original(self, params, frame_list[:-1])

        return add_reverse

    _wrap_writer("_add_reverse", make)


def name_videos_after(pictures: list[str]) -> None:
    """Name AnimateDiff's video files after the pictures, in order (``00012-<picture>-<seed>.gif``), and give each
    video its own generation info. Its writer saves one video per call of ``_save`` (the path's stem
    ``<sequence>-<seed>``, the video's first frame at ``index``), then puts the files where the frames were
    (``res.images``) but leaves one infotext per frame: each file gets its video's instead."""
    videos: list[tuple[str, int]] = []  # (infotext of the video's first frame, files written)

    def make_save(original):
        names = list(pictures)

        def save(self, params, frame_list, video_path_prefix, res, index):
            if names:
                sequence, _, rest = video_path_prefix.name.partition("-")
                video_path_prefix = video_path_prefix.with_name(f"{sequence}-{names.pop(0)}-{rest}")
            paths = original(self, params, frame_list, video_path_prefix, res, index)
            videos.append((res.infotexts[index] if index < len(res.infotexts) else "", len(paths or [])))
            return paths

        return save

    def make_output(original):
        def output(self, p, res, params):
            videos.clear()
            frame_infotexts = list(res.infotexts)
            original(self, p, res, params)
            per_file = [infotext for infotext, count in videos for _ in range(count)]
            if videos and len(res.images) >= len(per_file):
                # The API appends the last video's frames after the files: they keep their own infotexts.
                extra = len(res.images) - len(per_file)
                res.infotexts = per_file + (frame_infotexts[-extra:] if extra else [])

        return output

    _wrap_writer("_save", make_save)
    _wrap_writer("output", make_output)


def restore_writer() -> None:
    writer = _writer()
    for method in ("_add_reverse", "_save", "output"):
        original = getattr(writer.__dict__.get(method) if writer is not None else None, "i2v_adapter_original", None)
        if original is not None:
            setattr(writer, method, original)
