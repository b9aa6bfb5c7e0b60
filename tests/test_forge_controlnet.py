"""Our side of the contract with Forge's built-in ControlNet (a stand-in of its lib_controlnet here)."""
import enum
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image

from i2v_adapter.webui import controlnet
from i2v_adapter.webui.forge import controlnet as forge_controlnet
from i2v_adapter.webui.forge import generation as forge

MODELS = ["None", "control_v11p_sd15_openpose [072d8c29]", "ip-adapter_sd15 [6a3f6166]",
          "ip-adapter-plus_sd15 [740d44d3]", "ip-adapter_sdxl [5e6f7a8b]", "ip-adapter-plus_sdxl_vit-h [00aa11bb]"]
PREPROCESSORS = ["None", "CLIP-ViT-H (IPAdapter)", "CLIP-ViT-bigG (IPAdapter)", "reference_only"]


class InputMode(enum.Enum):
    SIMPLE = "simple"
    BATCH = "batch"


@dataclass
class ControlNetUnit:  # the fields our code reads and writes, with Forge's defaults
    input_mode: InputMode = InputMode.SIMPLE
    batch_image_dir: str = ""
    enabled: bool = True
    module: str = "None"
    model: str = "None"
    weight: float = 1.0
    image: Any = None

    @staticmethod
    def from_dict(values):  # like Forge's: unknown keys dropped, a base64 image becomes {"image", "mask"}
        unit = ControlNetUnit(**{k: v for k, v in values.items() if k in ControlNetUnit.__dataclass_fields__})
        if isinstance(unit.image, str):
            pixels = np.full((4, 4, 3), 7, np.uint8)
            unit.image = {"image": pixels, "mask": np.zeros_like(pixels)}
        return unit


class Reference:
    is_recording_style = False


@pytest.fixture
def fake_forge(monkeypatch):
    package = types.ModuleType("lib_controlnet")
    package.external_code = types.SimpleNamespace(ControlNetUnit=ControlNetUnit, InputMode=InputMode)
    refreshed = []
    package.global_state = types.SimpleNamespace(update_controlnet_filenames=lambda: refreshed.append(True),
                                                 get_all_controlnet_names=lambda: list(MODELS),
                                                 get_all_preprocessor_names=lambda: list(PREPROCESSORS))
    monkeypatch.setitem(sys.modules, "lib_controlnet", package)
    references = {"reference_only": Reference(), "reference_adain": Reference()}
    monkeypatch.setitem(sys.modules, "modules_forge", types.ModuleType("modules_forge"))
    monkeypatch.setitem(sys.modules, "modules_forge.shared", types.SimpleNamespace(supported_preprocessors=references))
    return types.SimpleNamespace(refreshed=refreshed, references=references)


class Script:
    args_from, args_to = 1, 4

    def title(self):
        return "ControlNet"


def processing(units, sdxl=False, with_controlnet=True):
    return types.SimpleNamespace(scripts=types.SimpleNamespace(alwayson_scripts=[Script()] if with_controlnet else []),
                                 script_args=("before", *units, "after"), sd_model=types.SimpleNamespace(is_sdxl=sdxl))


IMAGE = Image.fromarray(np.full((16, 24, 3), 90, np.uint8))
OFF = {"enabled": False}


def test_request_dicts_become_units_and_folders_become_batch_units(fake_forge):
    kept = ControlNetUnit(enabled=False)
    p = processing([{"enabled": True, "module": "none", "model": MODELS[1], "batch_images": "poses/"},  # A1111 names
                    {"enabled": True, "model": MODELS[1], "batch_image_dir": "depth/"}, kept])
    assert forge_controlnet.BUILTIN.convert_api_units(p) == 2
    a1111_style, forge_style, third = p.script_args[1:4]
    assert (a1111_style.input_mode, a1111_style.batch_image_dir) == (InputMode.BATCH, "poses/")
    assert a1111_style.module == "None" and forge_style.module == "None"  # Forge's name, and its default
    assert (forge_style.input_mode, forge_style.batch_image_dir) == (InputMode.BATCH, "depth/")
    assert third is kept and p.script_args[0] == "before" and p.script_args[4] == "after"


def test_a_request_image_keeps_the_unit_simple(fake_forge):
    p = processing([{"enabled": True, "model": MODELS[1], "image": "b64", "batch_images": "poses/"}, OFF, OFF])
    forge_controlnet.BUILTIN.convert_api_units(p)
    unit = p.script_args[1]
    assert unit.input_mode is InputMode.SIMPLE and unit.image["image"].shape == (4, 4, 3)


def test_only_enabled_units_reach_animatediff(fake_forge):
    on = ControlNetUnit(enabled=True, image="pose")
    p = processing([OFF, on, {"enabled": True, "batch_images": "poses/"}])
    units = forge_controlnet.enabled_units(p)
    assert units[0] is on and units[1].batch_image_dir == "poses/" and len(units) == 2
    assert forge_controlnet.enabled_units(processing([on], with_controlnet=False)) == []


def test_ip_adapter_unit_takes_the_first_free_slot(fake_forge):
    pose = ControlNetUnit(enabled=True, model=MODELS[1], image="pose")
    p = processing([pose, OFF, OFF])
    model = controlnet.use_image_as_ip_adapter_content(p, IMAGE, 0.7, forge_controlnet.BUILTIN)
    assert model == "ip-adapter-plus_sd15 [740d44d3]" and fake_forge.refreshed  # the model list was re-read
    unit = p.script_args[2]
    assert (unit.enabled, unit.module, unit.model, unit.weight) == (True, "CLIP-ViT-H (IPAdapter)", model, 0.7)
    assert unit.input_mode is InputMode.SIMPLE
    pixels, mask = unit.image["image"], unit.image["mask"]
    assert pixels.shape == (16, 24, 3) and (pixels == 90).all() and mask.shape == pixels.shape and not mask.any()
    assert p.script_args[1] is pose and not p.script_args[3].enabled


@dataclass
class Forge2ControlNetUnit(ControlNetUnit):  # Forge 2's unit also has the page's drawn foreground
    image_fg: Any = None


def test_forge2_units_get_the_picture_itself(fake_forge, monkeypatch):
    monkeypatch.setattr(sys.modules["lib_controlnet"].external_code, "ControlNetUnit", Forge2ControlNetUnit)
    p = processing([OFF, OFF, OFF])
    controlnet.use_image_as_ip_adapter_content(p, IMAGE, 0.7, forge_controlnet.BUILTIN)
    unit = p.script_args[1]
    assert isinstance(unit, Forge2ControlNetUnit) and unit.module == "CLIP-ViT-H (IPAdapter)"
    assert isinstance(unit.image, np.ndarray) and unit.image.shape == (16, 24, 3) and (unit.image == 90).all()


def test_an_ip_adapter_unit_without_image_is_filled_not_duplicated(fake_forge):
    mine = ControlNetUnit(enabled=True, module="CLIP-ViT-H (IPAdapter)", model=MODELS[2], weight=0.5)
    p = processing([OFF, mine, OFF])
    assert controlnet.use_image_as_ip_adapter_content(p, IMAGE, 1.0, forge_controlnet.BUILTIN) == MODELS[2]
    assert p.script_args[2] is mine and mine.weight == 0.5 and (mine.image["image"] == 90).all()
    assert not p.script_args[1].enabled and not p.script_args[3].enabled


@pytest.mark.parametrize("model,expected", [("ip-adapter_sdxl [5e6f7a8b]", "CLIP-ViT-bigG (IPAdapter)"),
                                            ("ip-adapter-plus_sdxl_vit-h [00aa11bb]", "CLIP-ViT-H (IPAdapter)")])
def test_sdxl_models_get_the_clip_they_were_trained_with(fake_forge, model, expected):
    assert forge_controlnet.BUILTIN.ip_adapter_preprocessor(model, sdxl=True) == expected


def test_refusals_say_what_to_do(fake_forge, monkeypatch):
    with pytest.raises(controlnet.ControlNetError, match="Forge's built-in ControlNet"):
        controlnet.use_image_as_ip_adapter_content(processing([], with_controlnet=False), IMAGE, 1.0,
                                                   forge_controlnet.BUILTIN)
    monkeypatch.setattr(sys.modules["lib_controlnet"].global_state, "get_all_controlnet_names", lambda: MODELS[:2])
    with pytest.raises(controlnet.ControlNetError, match="ip-adapter-plus_sd15.safetensors.*models/ControlNet "):
        controlnet.use_image_as_ip_adapter_content(processing([OFF] * 3), IMAGE, 1.0, forge_controlnet.BUILTIN)
    monkeypatch.setattr(sys.modules["lib_controlnet"].global_state, "get_all_controlnet_names", lambda: MODELS)
    monkeypatch.setattr(sys.modules["lib_controlnet"].global_state, "get_all_preprocessor_names", lambda: ["None"])
    with pytest.raises(controlnet.ControlNetError, match="sd_forge_ipadapter"):
        controlnet.use_image_as_ip_adapter_content(processing([OFF] * 3), IMAGE, 1.0, forge_controlnet.BUILTIN)


def test_reference_write_pass_follows_forges_reference_preprocessors(fake_forge):
    writing = forge_controlnet.BUILTIN.reference_write_pass(processing([]))
    assert writing() is False
    fake_forge.references["reference_adain"].is_recording_style = True
    assert writing() is True
    fake_forge.references["reference_adain"].is_recording_style = False
    assert writing() is False


def test_forge_generations_use_the_builtin_controlnet():
    assert forge.ForgeGeneration.controlnet is forge_controlnet.BUILTIN


def test_forge_classic_refuses_folders_its_controlnet_cannot_read(fake_forge, monkeypatch):
    monkeypatch.setitem(sys.modules, "modules_forge.forge_version", types.SimpleNamespace(version="classic"))
    single = processing([{"enabled": True, "model": MODELS[1], "image": "b64"}, OFF, OFF])
    assert forge_controlnet.BUILTIN.convert_api_units(single) == 3
    folder = processing([OFF, {"enabled": True, "model": MODELS[1], "batch_images": "poses/"}, OFF])
    with pytest.raises(controlnet.ControlNetError, match="Forge Classic's ControlNet takes one picture"):
        forge_controlnet.BUILTIN.convert_api_units(folder)
    assert forge_controlnet.enabled_units(folder)[0].batch_image_dir == "poses/"  # AnimateDiff's view never raises
    monkeypatch.setitem(sys.modules, "modules_forge.forge_version", types.SimpleNamespace(version="0.0.17v1.8.0rc"))
    assert forge_controlnet.BUILTIN.convert_api_units(processing([OFF, {"enabled": True, "batch_images": "p/"}, OFF])) == 3
