"""Any picture a user may give becomes 8-bit RGB."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from i2v_adapter.image_input import ImageInputError, decode_base64_image, to_rgb8


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    rgb = to_rgb8(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (0, 0, 255)


def test_palette_and_grey_images_expand():
    palette = Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE)
    assert to_rgb8(palette).getpixel((2, 2)) == (10, 200, 30)
    assert to_rgb8(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)


def test_sixteen_bit_images_are_scaled_not_clipped():
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I")
    rgb = np.asarray(to_rgb8(image))
    assert rgb[0, 0, 0] == 0 and rgb[1, 0, 0] == 255 and rgb[0, 1, 0] == 128


def test_base64_with_and_without_data_prefix():
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buffer, "PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    assert decode_base64_image(text).size == (3, 2)
    assert decode_base64_image("data:image/png;base64," + text).getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ImageInputError, match="not a readable"):
        decode_base64_image("bm90IGFuIGltYWdl")
