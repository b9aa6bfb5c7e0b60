"""Writing frames: ``.mp4``/``.webm`` (ffmpeg from imageio-ffmpeg), ``.gif``/``.webp`` (Pillow) or a folder of PNGs.

``comment``: text kept in the file (the WebUI's generation info): a metadata comment in MP4/WEBM, the GIF
comment, the WEBP's EXIF user comment, a ``parameters`` text chunk in each PNG (where the WebUI's PNG Info looks).
``quality`` (0-100, higher is better and larger) sets MP4's and WEBM's constant rate factor and lossy WEBP's
quality; ``lossless`` makes a WEBP lossless. GIF and WEBP loop forever.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".webp")
DEFAULT_QUALITY = 80
_CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}
# The worst constant rate factor of each codec: quality 0 maps to it, quality 100 to 0 (lossless-like).
_WORST_CRF = {".mp4": 51, ".webm": 63}


def missing_writer(suffixes) -> str | None:
    """The package that writing files of these suffixes needs and this Python lacks (MP4/WEBM: imageio-ffmpeg),
    or None: asked before a video is made, not when its frames are done."""
    import importlib.util

    if any(suffix.lower() in _CODECS for suffix in suffixes) and importlib.util.find_spec("imageio_ffmpeg") is None:
        return "imageio-ffmpeg"
    return None


def constant_rate_factor(suffix: str, quality: int) -> int:
    """``-crf`` for a 0-100 quality: 80 gives H.264 crf 10, what these files had before quality was a setting."""
    return round(_WORST_CRF[suffix] * (100 - quality) / 100)


def _write_ffmpeg(frames: Sequence[np.ndarray], path: Path, fps: int, comment: str | None = None,
                  quality: int = DEFAULT_QUALITY) -> None:
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    # yuv420p needs even sides; pad by repeating the last row/column rather than rescaling.
    pad_h, pad_w = height % 2, width % 2
    suffix = path.suffix.lower()
    rate = ["-crf", str(constant_rate_factor(suffix, quality))] + (["-b:v", "0"] if suffix == ".webm" else [])
    writer = imageio_ffmpeg.write_frames(
        str(path), (width + pad_w, height + pad_h), fps=fps, codec=_CODECS[suffix],
        pix_fmt_out="yuv420p", macro_block_size=1, quality=None, ffmpeg_log_level="error",
        output_params=rate + (["-metadata", f"comment={comment}"] if comment else []),
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


def _write_webp(frames: Sequence[np.ndarray], path: Path, fps: int, comment: str | None = None,
                quality: int = DEFAULT_QUALITY, lossless: bool = False) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    extra = {}
    if comment:
        exif = Image.Exif()
        # UserComment (0x9286) in the Exif IFD, marked as UTF-16 text as the WebUI writes its own WEBPs.
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + comment.encode("utf-16-be")
        extra["exif"] = exif
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, lossless=lossless, quality=quality, **extra)


def _write_pngs(frames: Sequence[np.ndarray], folder: Path, comment: str | None = None) -> None:
    from PIL import PngImagePlugin

    folder.mkdir(parents=True, exist_ok=True)
    info = None
    if comment:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", comment)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png", pnginfo=info)


def write_video(frames: Sequence[np.ndarray], out, fps: int = 8, comment: str | None = None,
                quality: int = DEFAULT_QUALITY, lossless: bool = False) -> Path:
    """Write uint8 RGB frames to ``out``: a ``.mp4``, ``.webm``, ``.gif`` or ``.webp`` file, or else a folder of PNG
    frames."""
    out = Path(out)
    if not frames:
        raise ValueError("no frames to write")
    suffix = out.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".gif":
            _write_gif(frames, out, fps, comment)
        elif suffix == ".webp":
            _write_webp(frames, out, fps, comment, quality, lossless)
        else:
            _write_ffmpeg(frames, out, fps, comment, quality)
    elif suffix:
        raise ValueError(f"{out}: write .mp4, .webm, .gif, .webp, or a folder name without a suffix")
    else:
        _write_pngs(frames, out, comment)
    return out
