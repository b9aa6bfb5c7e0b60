"""Reading a training clip: ``frames`` frames ``stride`` apart from a random start, resized and centre-cropped.

Two decoders: imageio-ffmpeg (exact frame count, sequential decode) and OpenCV. Any failure is an
:class:`UnusableClip` with a short reason, so that the data loader can skip the video and count it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

DECODERS = ("auto", "ffmpeg", "opencv")


class UnusableClip(Exception):
    """A video the trainer skips: ``reason`` is ``unreadable`` or ``too short``; the message says more."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def frame_span(frames: int, stride: int) -> int:
    """Video frames covered by one clip: first to last sampled frame."""
    return (frames - 1) * stride + 1


def clip_indices(total: int, frames: int, stride: int, rng: np.random.Generator) -> list[int]:
    span = frame_span(frames, stride)
    if total < span:
        raise UnusableClip("too short", f"{total} frames, a clip of {frames} at stride {stride} needs {span}")
    start = int(rng.integers(0, total - span + 1))
    return [start + k * stride for k in range(frames)]


def resize_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size`` (Lanczos), then the central ``size`` x ``size`` square."""
    height, width = frame.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = Image.fromarray(frame)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


# With this many frames or more before a clip, seeking beats decoding them (a long video's random start).
SEEK_AFTER = 48


def _decode_ffmpeg(path: str, wanted: list[int], first: int, seconds: float | None) -> dict[int, np.ndarray]:
    """The ``wanted`` frames, decoding from frame ``first`` (reached by seeking to ``seconds``) or from 0."""
    import imageio_ffmpeg

    picked = {}
    reader = imageio_ffmpeg.read_frames(path, input_params=["-ss", f"{seconds:.6f}"] if seconds else None)
    try:
        width, height = next(reader)["size"]
        for index, data in enumerate(reader, start=first):
            if index in wanted:
                picked[index] = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            if index >= wanted[-1]:
                break
    except Exception as error:
        raise UnusableClip("unreadable", _one_line(error)) from None
    finally:
        reader.close()
    return picked


def _read_ffmpeg(path: str, frames: int, stride: int, rng) -> list[np.ndarray]:
    import imageio_ffmpeg

    try:
        total, duration = imageio_ffmpeg.count_frames_and_secs(path)
    except Exception as error:  # ffmpeg's failures come as RuntimeError, OSError, ...
        raise UnusableClip("unreadable", _last_line(error)) from None
    wanted = clip_indices(total, frames, stride, rng)
    picked = {}
    if wanted[0] >= SEEK_AFTER and duration > 0:
        # Half a frame early: ffmpeg's accurate seek then starts exactly at the first wanted frame.
        picked = _decode_ffmpeg(path, wanted, wanted[0], (wanted[0] - 0.5) * duration / total)
    if len(picked) < len(wanted):  # no seek, or a variable frame rate fooled it: decode from the start
        picked = _decode_ffmpeg(path, wanted, 0, None)
    return [picked[i] for i in wanted] if len(picked) == len(wanted) else _short(path, len(picked), wanted)


def _read_opencv(path: str, frames: int, stride: int, rng) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise UnusableClip("unreadable", "OpenCV cannot open it")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            raise UnusableClip("unreadable", "OpenCV reads no frame count")
        wanted = clip_indices(total, frames, stride, rng)
        picked = {}
        for index in range(wanted[-1] + 1):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                picked[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    return [picked[i] for i in wanted] if len(picked) == len(wanted) else _short(path, len(picked), wanted)


def _short(path: str, decoded: int, wanted: list[int]):
    raise UnusableClip("unreadable", f"decoding stopped after {decoded} of the {len(wanted)} frames wanted")


def _last_line(error: Exception) -> str:
    """ffmpeg puts its banner first and the reason last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:160] if lines else type(error).__name__


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:160] or type(error).__name__


def choose_decoder(name: str) -> str:
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose from {', '.join(DECODERS)}")
    if name != "auto":
        return name
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return "opencv"
    return "ffmpeg"


def read_clip(path: str, frames: int, stride: int, resolution: int, rng: np.random.Generator,
              decoder: str = "ffmpeg") -> np.ndarray:
    """(frames, resolution, resolution, 3) uint8 RGB, or :class:`UnusableClip`."""
    read = _read_ffmpeg if decoder == "ffmpeg" else _read_opencv
    try:
        raw = read(path, frames, stride, rng)
    except UnusableClip:
        raise
    except Exception as error:  # a decoder's own failure on a damaged file must skip it, not stop training
        raise UnusableClip("unreadable", _one_line(error)) from None
    return np.stack([resize_center_crop(frame, resolution) for frame in raw])
