"""The only code that imports the WebUI, AnimateDiff or ControlNet."""
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
