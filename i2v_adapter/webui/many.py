"""Several pictures, one video each: the request's pictures resolved before the WebUI lays out its batches.

The WebUI's batch count becomes the number of pictures, so each of its iterations makes one video (with the
WebUI's own seed for that iteration); the generation switches frame 0's picture at the start of each.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..params import I2VParams
from ..pictures import NamedPicture, pictures_in_folder, pictures_of_values
from .lifecycle import I2VAdapterError

log = logging.getLogger("i2v_adapter")

PICTURES = "i2v_adapter_pictures"  # the resolved list, kept on p


def resolve(p, params: I2VParams) -> list[NamedPicture] | None:
    """The pictures the request names (None: just the one picture), and ``p.n_iter`` set to their number."""
    if not params.many_pictures:
        return None
    if params.folder.strip():
        pictures, skipped = _folder(params.folder.strip())
    else:
        pictures, skipped = pictures_of_values(params.images)
    for name in skipped:
        log.warning("I2V-Adapter: skipped %s: not a readable picture", name)
    if not pictures:
        raise I2VAdapterError("I2V-Adapter: none of the pictures could be read" + (
            f" ({', '.join(skipped)})." if skipped else "."))
    if params.ip_adapter and len(pictures) > 1:
        raise I2VAdapterError("I2V-Adapter: the IP-Adapter option takes one picture for the whole generation: turn "
                              "it off for one video per picture.")
    p.n_iter = len(pictures)
    setattr(p, PICTURES, pictures)
    log.info("I2V-Adapter: %d pictures, one video each%s", len(pictures),
             f" ({len(skipped)} skipped)" if skipped else "")
    return pictures


def _folder(folder: str):
    from modules import shared

    if getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise I2VAdapterError("I2V-Adapter: this WebUI was started with --hide-ui-dir-config and reads no folder "
                              "on the server: upload the pictures instead.")
    if not Path(folder).is_dir():
        raise I2VAdapterError(f"I2V-Adapter: there is no folder {folder} on the server.")
    pictures, skipped = pictures_in_folder(folder)
    if not pictures and not skipped:
        raise I2VAdapterError(f"I2V-Adapter: the folder {folder} holds no pictures.")
    return pictures, skipped


def show_progress(k: int, count: int, name: str) -> None:
    """'video k of n' where the WebUI shows progress (it sets its own job text itself)."""
    from modules import shared

    shared.state.textinfo = f"I2V-Adapter: video {k + 1} of {count} ({name})"
