"""Any picture a user may give becomes 8-bit RGB."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from i2v_adapter.image_input import ImageInputError, decode_base64_image, picture_from_value, to_rgb8


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


def test_picture_from_each_kind_of_value():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    array = np.asarray(image)
    for value in (image, array, encoded, "data:image/png;base64," + encoded, {"image": image, "mask": None},
                  {"background": image, "layers": [], "composite": None}):
        picture = picture_from_value(value)
        assert np.array_equal(np.asarray(picture.convert("RGB")), array)
    for empty in (None, "", "  ", {"image": None}):
        assert picture_from_value(empty) is None


@pytest.mark.parametrize("value,message", [
    (12345, "not int"),
    ([1, 2], "not list"),
    ({"image": 3.5}, "not float"),
    (np.zeros((2, 2), dtype=np.float64), "must be 8-bit"),
    ("not base64 at all", "not a readable base64-encoded picture"),
])
def test_picture_values_that_are_not_pictures_are_refused(value, message):
    with pytest.raises(ImageInputError, match=message):
        picture_from_value(value)
