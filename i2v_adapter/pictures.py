"""Several pictures in, one video each: the pictures of a list or a folder, each with the name its video takes.

A picture that cannot be read is left out and named in ``skipped``; the callers say so in one line each.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .image_input import ImageInputError, picture_from_value, to_rgb8

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class NamedPicture:
    name: str  # the file's stem, or picture-<k> for a picture sent without a name
    image: Image.Image


def read_picture_file(path) -> Image.Image:
    """An 8-bit RGB picture from a file, turned as its EXIF says; OSError/UnidentifiedImageError if unreadable."""
    with Image.open(path) as opened:
        return to_rgb8(ImageOps.exif_transpose(opened))


def pictures_in_folder(folder) -> tuple[list[NamedPicture], list[str]]:
    """The pictures of ``folder`` sorted by name, and the names of the files that could not be read."""
    pictures, skipped = [], []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix.lower() not in PICTURE_SUFFIXES:
            continue
        try:
            pictures.append(NamedPicture(path.stem, read_picture_file(path)))
        except (UnidentifiedImageError, OSError):
            skipped.append(path.name)
    return pictures, skipped


def pictures_of_values(values) -> tuple[list[NamedPicture], list[str]]:
    """Pictures from a list of UI or API values: uploaded files (gradio's file objects and gradio 4's path strings
    carry the upload's path in ``name``), PIL pictures, arrays or base64 strings; in order, with the names of those
    that could not be read. A plain string is never read as a path: an API caller reaches no server file."""
    pictures, skipped = [], []
    for index, value in enumerate(values, 1):
        path = None if isinstance(value, Image.Image) else getattr(value, "name", None)
        try:
            if path is not None:
                pictures.append(NamedPicture(Path(path).stem, read_picture_file(path)))
                continue
            picture = picture_from_value(value)
        except (UnidentifiedImageError, OSError, ImageInputError):
            skipped.append(Path(path).name if path is not None else f"picture {index}")
            continue
        if picture is not None:
            pictures.append(NamedPicture(f"picture-{index}", to_rgb8(picture)))
    return pictures, skipped
