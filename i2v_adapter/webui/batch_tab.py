"""The img2img Batch tab with I2V-Adapter on: one video per input picture, in one generation.

The WebUI's Batch tab calls ``modules.img2img.process_batch`` (a module global, looked up at the call, which
AnimateDiff and ControlNet also replace). While an I2V generation is set up, that global is wrapped: called for
this generation's ``p``, it reads the tab's pictures (a server folder or the uploads) and runs one generation with
them as the request's pictures; for any other ``p`` it hands over to what it wrapped. It removes itself at its
first call and at the next generation's sweep. With I2V-Adapter off nothing is wrapped, so AnimateDiff keeps
its frames-from-a-folder behaviour.
"""
from __future__ import annotations

import logging
import sys

from ..pictures import pictures_in_folder, pictures_of_values
from . import many
from .lifecycle import stop_with_message

log = logging.getLogger("i2v_adapter")
MODULE = "modules.img2img"


def wrap(p) -> None:
    module = sys.modules.get(MODULE)
    current = getattr(module, "process_batch", None)
    if current is None:
        return
    current = getattr(current, "i2v_adapter_original", current)

    def process_batch(batch_p, source, output_dir, inpaint_mask_dir, args, *rest, **options):
        module.process_batch = current
        if batch_p is not p:
            return current(batch_p, source, output_dir, inpaint_mask_dir, args, *rest, **options)
        return _one_generation(batch_p, source, (output_dir or "").strip(), args)

    process_batch.i2v_adapter_original = current
    module.process_batch = process_batch


def restore() -> None:
    module = sys.modules.get(MODULE)
    original = getattr(getattr(module, "process_batch", None), "i2v_adapter_original", None)
    if original is not None:
        module.process_batch = original


def _one_generation(p, source, output_dir: str, args):
    from modules import processing, scripts

    pictures, skipped = pictures_in_folder(source) if isinstance(source, str) else pictures_of_values(source or [])
    for name in skipped:
        log.warning("I2V-Adapter: skipped %s: not a readable picture", name)
    if pictures:
        setattr(p, many.PICTURES, pictures)
        p.n_iter = len(pictures)
        p.init_images = [pictures[0].image]
        log.info("I2V-Adapter: the Batch tab's %d pictures, one video each", len(pictures))
    else:
        stop_with_message(p, "I2V-Adapter: the Batch tab's folder holds no readable pictures" + (
            f" ({', '.join(skipped)})." if skipped else "."))
    if output_dir:
        p.outpath_samples = output_dir
    processed = scripts.scripts_img2img.run(p, *args)
    return processed if processed is not None else processing.process_images(p)
