"""Writing frames: ``.mp4``/``.webm`` (ffmpeg from imageio-ffmpeg), ``.gif`` (Pillow) or a folder of PNGs.

``comment``: text kept in the file (the WebUI's generation info): a metadata comment in MP4/WEBM, the GIF
comment, a ``parameters`` text chunk in each PNG (where the WebUI's PNG Info looks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif")
_CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}


def _write_ffmpeg(frames: Sequence[np.ndarray], path: Path, fps: int, comment: str | None = None) -> None:
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    # yuv420p needs even sides; pad by repeating the last row/column rather than rescaling.
    pad_h, pad_w = height % 2, width % 2
    writer = imageio_ffmpeg.write_frames(
        str(path), (width + pad_w, height + pad_h), fps=fps, codec=_CODECS[path.suffix.lower()],
        pix_fmt_out="yuv420p", macro_block_size=1, quality=8, ffmpeg_log_level="error",
        output_params=["-metadata", f"comment={comment}"] if comment else None,
    )
    writer.send(None)
    try:
        for frame in frames:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_gif(frames: Sequence[np.ndarray], path: Path, fps: int, comment: str | None = None) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    extra = {"comment": comment.encode("utf-8")} if comment else {}
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0,
                   disposal=2, optimize=False, **extra)


def _write_pngs(frames: Sequence[np.ndarray], folder: Path, comment: str | None = None) -> None:
    from PIL import PngImagePlugin

    folder.mkdir(parents=True, exist_ok=True)
    info = None
    if comment:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", comment)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png", pnginfo=info)


def write_video(frames: Sequence[np.ndarray], out, fps: int = 8, comment: str | None = None) -> Path:
    """Write uint8 RGB frames to ``out``: a ``.mp4``, ``.webm`` or ``.gif`` file, or else a folder of PNG frames."""
    out = Path(out)
    if not frames:
        raise ValueError("no frames to write")
    suffix = out.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        out.parent.mkdir(parents=True, exist_ok=True)
        (_write_gif if suffix == ".gif" else _write_ffmpeg)(frames, out, fps, comment)
    elif suffix:
        raise ValueError(f"{out}: write .mp4, .webm, .gif, or a folder name without a suffix")
    else:
        _write_pngs(frames, out, comment)
    return out
