"""Our side of the contract with sd-webui-controlnet's public external_code API (a stand-in of it here)."""
import enum
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image

from i2v_adapter.webui import controlnet
from i2v_adapter.webui.a1111 import controlnet as extension

MODELS = ["control_v11p_sd15_openpose [072d8c29]", "ip-adapter_sd15 [6a3f6166]", "ip-adapter-plus_sd15 [740d44d3]",
          "ip-adapter-plus-face_sd15 [1a2b3c4d]", "ip-adapter_sdxl_vit-h [5e6f7a8b]", "ip-adapter-plus_sdxl_vit-h [00aa11bb]"]
MODULES = ["none", "openpose", "ip-adapter-auto", "ip-adapter_clip_sd15", "reference_only"]


class InputMode(enum.Enum):
    SIMPLE = "simple"
    BATCH = "batch"


@dataclass
class ControlNetUnit:  # the fields our code reads and writes, with ControlNet's defaults
    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Any = None
    input_mode: InputMode = InputMode.SIMPLE
    batch_images: Any = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values):
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Script:
    def __init__(self, args_from, args_to):
        self.args_from, self.args_to = args_from, args_to
        self.latest_network = None

    def title(self):
        return "ControlNet"


@pytest.fixture
def fake_controlnet(monkeypatch):
    module = types.ModuleType("scripts.external_code")
    module.ControlNetUnit = ControlNetUnit
    module.script = Script(1, 4)
    module.find_cn_script = lambda runner: module.script if runner is not None else None
    module.to_processing_unit = lambda unit: ControlNetUnit.from_dict(unit) if isinstance(unit, dict) else unit
    module.get_models = lambda update=False: list(MODELS)
    module.get_modules = lambda: list(MODULES)
    monkeypatch.setitem(sys.modules, "scripts.external_code", module)
    return module


def processing(units, sdxl=False):
    return types.SimpleNamespace(scripts=object(), script_args=("before", *units, "after"),
                                 sd_model=types.SimpleNamespace(is_sdxl=sdxl))


IMAGE = Image.fromarray(np.full((16, 24, 3), 90, np.uint8))


def test_absent_controlnet_is_detected(monkeypatch):
    monkeypatch.setitem(sys.modules, "scripts.external_code", None)  # import fails like a missing extension
    assert extension.external_code() is None
    p = processing([])
    assert extension.EXTENSION.convert_api_units(p) == 0
    assert extension.EXTENSION.reference_write_pass(p)() is False
    with pytest.raises(controlnet.ControlNetError, match="needs the sd-webui-controlnet extension"):
        controlnet.use_image_as_ip_adapter_content(p, IMAGE, 1.0, extension.EXTENSION)


def test_present_controlnet_is_detected(fake_controlnet):
    assert extension.external_code() is fake_controlnet


def test_request_dicts_become_units_and_batch_folders_become_batch_units(fake_controlnet):
    p = processing([{"enabled": True, "model": MODELS[0], "batch_images": "poses/"},
                    {"enabled": True, "model": MODELS[0], "image": "b64"}, ControlNetUnit()])
    assert extension.EXTENSION.convert_api_units(p) == 2
    first, second, third = p.script_args[1:4]
    assert isinstance(first, ControlNetUnit) and first.input_mode is InputMode.BATCH and first.batch_images == "poses/"
    assert second.input_mode is InputMode.SIMPLE and second.image == "b64" and second.batch_images == ""
    assert third == ControlNetUnit()
    assert p.script_args[0] == "before" and p.script_args[4] == "after"  # other scripts' arguments untouched


@pytest.mark.parametrize("models,sdxl,expected", [
    (MODELS, False, "ip-adapter-plus_sd15 [740d44d3]"),
    (MODELS, True, "ip-adapter-plus_sdxl_vit-h [00aa11bb]"),
    (MODELS[:2], False, "ip-adapter_sd15 [6a3f6166]"),
    (["control_v11p_sd15_openpose", "ip-adapter-plus-face_sd15"], False, None),
])
def test_ip_adapter_model_choice(models, sdxl, expected):
    assert controlnet.choose_ip_adapter_model(models, sdxl) == expected


def test_ip_adapter_unit_takes_the_first_free_slot(fake_controlnet):
    pose = ControlNetUnit(enabled=True, model=MODELS[0], image="pose")
    p = processing([pose, ControlNetUnit(), ControlNetUnit()])
    model = controlnet.use_image_as_ip_adapter_content(p, IMAGE, 0.7, extension.EXTENSION)
    assert model == "ip-adapter-plus_sd15 [740d44d3]"
    unit = p.script_args[2]
    assert (unit.enabled, unit.module, unit.model, unit.weight) == (True, "ip-adapter-auto", model, 0.7)
    assert unit.batch_images == ""  # AnimateDiff splits it for every enabled unit
    assert unit.image.shape == (16, 24, 3) and unit.image.dtype == np.uint8 and (unit.image == 90).all()
    assert p.script_args[1] is pose and p.script_args[3] == ControlNetUnit()


def test_an_ip_adapter_unit_without_image_is_filled_not_duplicated(fake_controlnet):
    mine = ControlNetUnit(enabled=True, module="ip-adapter_clip_sd15", model=MODELS[1], weight=0.5)
    p = processing([ControlNetUnit(), mine, ControlNetUnit()])
    assert controlnet.use_image_as_ip_adapter_content(p, IMAGE, 1.0, extension.EXTENSION) == MODELS[1]
    filled = p.script_args[2]
    assert filled.model == MODELS[1] and filled.weight == 0.5 and filled.image.shape == (16, 24, 3)
    assert not p.script_args[1].enabled and not p.script_args[3].enabled


def test_ip_adapter_refusals_say_what_to_do(fake_controlnet, monkeypatch):
    busy = [ControlNetUnit(enabled=True, model=MODELS[0], image="x") for _ in range(3)]
    with pytest.raises(controlnet.ControlNetError, match="all 3 ControlNet units are in use"):
        controlnet.use_image_as_ip_adapter_content(processing(busy), IMAGE, 1.0, extension.EXTENSION)
    monkeypatch.setattr(fake_controlnet, "get_models", lambda update=False: [MODELS[0]])
    with pytest.raises(controlnet.ControlNetError, match="ip-adapter-plus_sd15.safetensors"):
        controlnet.use_image_as_ip_adapter_content(processing([ControlNetUnit()] * 3), IMAGE, 1.0, extension.EXTENSION)


def test_reference_write_pass_follows_controlnets_state(fake_controlnet):
    class AutoMachine(enum.Enum):
        Read = "Read"
        Write = "Write"

    writing = extension.EXTENSION.reference_write_pass(processing([]))
    assert writing() is False  # before ControlNet hooked anything
    fake_controlnet.script.latest_network = types.SimpleNamespace(attention_auto_machine=AutoMachine.Write)
    assert writing() is True
    fake_controlnet.script.latest_network.attention_auto_machine = AutoMachine.Read
    assert writing() is False
