"""The only code that imports the WebUI, AnimateDiff or ControlNet.

Shared by every host: ``lifecycle`` (parse, check, begin, refuse, sweep), ``generation`` (one I2V generation),
``host`` (which WebUI this is), ``animatediff`` (sd-webui-animatediff's settings and windows), ``controlnet``
(what both ControlNets offer), the panel (``ui``, ``preview``, ``send_to``, ``page``), ``settings``,
``model_files``, ``refusal`` and ``xyz``. One folder per host: ``a1111`` (forward hooks, sd-webui-controlnet),
``forge`` (the classic Forge family: UnetPatcher patches, the built-in ControlNet, AnimateDiff's forge branch)
and ``forge2`` (Forge 2: our own motion modules, motion LoRAs, windows, the video files, the motion section).
"""
import logging
import sys

# The WebUI leaves the root logger at WARNING; our short progress notes go to the console like AnimateDiff's.
_log = logging.getLogger("i2v_adapter")
if not _log.handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [I2V-Adapter] %(message)s", "%H:%M:%S"))
    _log.addHandler(_handler)
    _log.setLevel(logging.INFO)
    _log.propagate = False
