"""The Settings entry: another folder for adapter weights."""
from . import model_files


def add_settings():
    from modules import shared

    section = ("i2v_adapter", "I2V-Adapter")
    shared.opts.add_option(model_files.SETTING_KEY, shared.OptionInfo(
        "", "Extra folder for I2V-Adapter weights (besides models/I2V-Adapter)", section=section))
