"""Turn any user image into the 8-bit RGB picture the VAE encodes."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


class ImageInputError(ValueError):
    pass


def decode_base64_image(text: str, what: str = "the image") -> Image.Image:
    """A base64 image as sent to the API, with or without a ``data:image/...;base64,`` prefix.
    ``what``: the picture's name in a refusal, e.g. 'the last frame (last_image)'."""
    if "," in text and text.lstrip().startswith("data:"):
        text = text.split(",", 1)[1]
    try:
        return Image.open(io.BytesIO(base64.b64decode(text, validate=False))).copy()
    except Exception:
        raise ImageInputError(f"I2V-Adapter: {what} is not a readable base64-encoded picture.") from None


def picture_from_value(value, what: str = "the image") -> Image.Image | None:
    """The picture in a UI or API value: a PIL image, an array, a gradio image dict or a base64 string.

    ``None`` or an empty string: no picture given. Anything else is refused with what an image may be, naming
    the picture as ``what``.
    """
    if isinstance(value, dict):  # gradio 3 sketch/upload value; gradio 4 ImageEditor value
        value = next((value[key] for key in ("image", "composite", "background") if value.get(key) is not None), None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return decode_base64_image(value, what)
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim not in (2, 3):
            raise ImageInputError(f"I2V-Adapter: {what} as an array must be 8-bit, H x W or H x W x channels.")
        return Image.fromarray(value)
    if isinstance(value, Image.Image):
        return value
    raise ImageInputError(f"I2V-Adapter: {what} must be a picture, a gradio image value or a base64-encoded "
                          f"PNG/JPEG string, not {type(value).__name__}.")


def to_rgb8(image: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """8-bit RGB: transparency composited on ``background``, palettes expanded, 16-bit and float scaled down."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and values.max() > 255 else 255.0
        if image.mode == "F" and values.max() <= 1.0:
            top = 1.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
