"""Forge 2: the finished frames written as videos under the outputs folder, and put in front of the results.

The writer is the command line's (``pipeline.video``). API callers get each video as base64 before the
frames; the UI's gallery gets the files' paths (gradio 4 shows a GIF from its path).
"""
from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import numpy as np

from ...pipeline.video import write_video
from .params import MotionParams

log = logging.getLogger("i2v_adapter")

SUFFIXES = {"GIF": ".gif", "MP4": ".mp4", "WEBM": ".webm", "WEBP": ".webp", "PNG": ""}


def output_folder(p) -> Path:
    from modules import shared

    base = getattr(p, "outpath_samples", None) or shared.opts.outdir_samples or "outputs"
    return Path(base) / "i2v-adapter"


def _next_stem(folder: Path, seed: int, picture: str | None = None) -> str:
    """``00012-<seed>``, or ``00012-<picture>-<seed>`` for a video of one of several pictures."""
    taken = [int(name.split("-", 1)[0]) for name in os.listdir(folder) if name.split("-", 1)[0].isdigit()]
    return f"{max(taken, default=-1) + 1:05d}-{f'{picture}-' if picture else ''}{seed}"


def write_outputs(frames: list[np.ndarray], folder: Path, seed: int, settings: MotionParams,
                  infotext: str, loop: bool = False, picture: str | None = None) -> list[Path]:
    """Every format ``settings`` chose, of the frames, under ``folder``; the videos first, PNG frames last.

    ``loop``: the last frame repeats frame 0, so the videos leave it out and play seamlessly; the PNG frames
    keep it (the last PNG equals the first)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = _next_stem(folder, seed, picture)
    order = [name for name in SUFFIXES if name in settings.formats]
    return [write_video(frames[:-1] if loop and name != "PNG" else frames, folder / f"{stem}{SUFFIXES[name]}",
                        fps=settings.fps, comment=infotext, quality=settings.quality, lossless=settings.webp_lossless)
            for name in order]


def add_to_results(p, processed, frames: int, settings: MotionParams, videos_last: bool = False,
                   loop: bool = False, pictures: list[str] | None = None) -> list[Path]:
    """Write one video per ``frames`` pictures of ``processed`` (one per batch count) and list them first, or
    after the pictures with ``videos_last`` (an X/Y/Z plot cell: its grid takes the cell's first picture).
    ``pictures``: the input pictures' names, one per video, for the file names."""
    start = getattr(processed, "index_of_first_image", 0)
    seeds = list(getattr(processed, "all_seeds", None) or [getattr(processed, "seed", 0)])
    shown, infotexts, written = [], [], []
    for video in range((len(processed.images) - start) // frames):
        first = start + video * frames
        frames_of_video = [np.asarray(image.convert("RGB")) for image in processed.images[first:first + frames]]
        infotext = processed.infotexts[first] if first < len(processed.infotexts) else ""
        seed = int(seeds[min(video * frames, len(seeds) - 1)])
        name = pictures[video] if pictures and video < len(pictures) else None
        paths = write_outputs(frames_of_video, output_folder(p), seed, settings, infotext, loop, name)
        videos = [path for path in paths if path.suffix]
        if getattr(p, "is_api", False):
            shown += [base64.b64encode(path.read_bytes()).decode() for path in videos]
        else:
            shown += [str(path) for path in videos]
        infotexts += [infotext] * len(videos)
        written += paths
    if not written:
        log.warning("I2V-Adapter: fewer than %d pictures came back, no video written", frames)
        return []
    for results, entries in ((processed.images, shown), (processed.infotexts, infotexts)):
        at = len(results) if videos_last else start
        results[at:at] = entries
    log.info("I2V-Adapter: wrote %s", ", ".join(str(path) for path in written))
    return written
