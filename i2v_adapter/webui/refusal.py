"""A refused generation started from the page: one sentence under the (empty) result, no traceback.

Through the API a refusal is an HTTP 422 with the sentence. From the page, an exception would reach the
WebUI's request wrapper, which prints the whole argument list and a Python traceback to the console for
what is only a user's input mistake. So a page request ends instead without sampling anything: the
generation runs zero batches, every script's postprocess runs as usual (AnimateDiff restores its motion
module), and the sentence is the result's comment, which the page shows under the generation info
(javascript/ marks it as an error).

A refused cell of an X/Y/Z plot ends the same way, from the page or the API, so the rest of the plot is made;
the cell then shows a picture of its sentence (:func:`refusal_picture`) instead of failing the whole plot.
"""
from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw

from . import xyz


def end_without_pictures(p, message: str) -> bool:
    """End a page request (or a plot cell) quietly with ``message``; False for other API requests, which get
    the HTTP error."""
    if getattr(p, "is_api", False) and not xyz.in_xyz_plot(p):
        return False
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(message)
    elif isinstance(getattr(p, "comments", None), dict):
        p.comments[message] = 1
    else:
        return False
    p.n_iter = 0  # read by the WebUI's batch loop right after p.init
    return True


def refusal_picture(message: str, width: int, height: int) -> Image.Image:
    """The sentence in dark red on white, wrapped to the picture, for a refused plot cell."""
    picture = Image.new("RGB", (max(64, int(width)), max(64, int(height))), "white")
    draw = ImageDraw.Draw(picture)
    characters = max(8, picture.width // 7)
    draw.multiline_text((4, 4), "\n".join(textwrap.wrap(message, characters)), fill=(150, 0, 0))
    return picture


def show_in_plot_cell(p, processed, message: str) -> None:
    """Give a refused X/Y/Z cell its picture: the sentence, with the sentence as its infotext."""
    if not xyz.in_xyz_plot(p) or processed.images:
        return
    processed.images.append(refusal_picture(message, getattr(p, "width", 512), getattr(p, "height", 512)))
    # First: the plot takes each cell's first infotext (the WebUI leaves a generic one there when nothing ran).
    processed.infotexts.insert(0, message)
