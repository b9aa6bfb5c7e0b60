"""Forge 2 glue that runs without Forge: video settings, windows through the UNet wrapper, the schedule
override, refusals, and the video files."""
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from i2v_adapter.layout import FrameLayout
from i2v_adapter.motion import animatediff_sigmas, context_windows
from i2v_adapter.params import I2VParams, ParamsError
from i2v_adapter.webui.forge2 import motion as forge2_motion
from i2v_adapter.webui.forge2.params import MotionParams, formats_from_infotext, split_arguments
from i2v_adapter.webui.forge2.video import write_outputs
from i2v_adapter.webui.forge2.windows import window_wrapper


# -- settings -----------------------------------------------------------------------------------------

def test_an_api_dict_is_split_by_key():
    i2v, motion = split_arguments([{"enable": True, "scale": 0.5, "frames": 12, "formats": "gif, mp4",
                                    "motion_module": "mm.safetensors"}])
    assert i2v == [{"enable": True, "scale": 0.5}]
    assert motion == MotionParams(motion_module="mm.safetensors", frames=12, formats=("GIF", "MP4"))


def test_unknown_keys_are_refused_with_every_known_name():
    with pytest.raises(ParamsError, match=r"unknown parameter\(s\) bogus; known: enable, .*, motion_module, frames"):
        split_arguments([{"enable": True, "bogus": 1}])


def test_panel_values_are_split_by_position():
    panel = [True, None, "", 1.0, 1.0, 0.5, 18.0, True, False, 1.0, None, False, None, ""]
    assert len(panel) == len(I2VParams.names())
    i2v, motion = split_arguments(panel + ["mm.ckpt", 24.0, 12, 16, 4, ["WEBM", "PNG"], "motion only",
                                           "loop the motion", "v2_lora_ZoomIn.ckpt:0.8, pan.safetensors", 70, True])
    assert i2v == panel
    assert motion == MotionParams("mm.ckpt", 24, 12, 16, 4, ("WEBM", "PNG"), True, "loop",
                                  (("v2_lora_ZoomIn.ckpt", 0.8), ("pan.safetensors", 1.0)), 70, True)


@pytest.mark.parametrize("values, message", [
    ({"frames": 1}, "frames must be between 2 and 64"),
    ({"frames": 65}, "frames must be between 2 and 64"),
    ({"frames": 8.5}, "frames must be a whole number"),
    ({"frames": True}, "frames must be a whole number"),
    ({"fps": "fast"}, "fps must be a whole number"),
    ({"formats": ["GIF", "AVI"]}, "unknown format(s) AVI"),
    ({"formats": 3}, "formats must be a list"),
    ({"closed_loop": "sometimes"}, "closed_loop must be one of off, loop, loop+prompts, loop-every-stride"),
    ({"motion_only": "maybe"}, "motion_only must be true or false"),
    ({"motion_lora": [{"name": "zoom.ckpt", "strength": "a lot"}]}, "strength of motion LoRA zoom.ckpt must be a number"),
    ({"motion_lora": [{"name": "zoom.ckpt", "strength": 3}]}, "from -2 to 2"),
    ({"motion_lora": [{"file": "zoom.ckpt"}]}, "each motion_lora entry takes \"name\" and \"strength\""),
    ({"motion_lora": ["../secret.ckpt:1"]}, "must be a file name from the motion LoRA folder"),
    ({"motion_lora": 5}, "motion_lora must be a list"),
    ({"quality": 101}, "quality must be between 0 and 100"),
])
def test_bad_video_settings_are_one_sentence(values, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        MotionParams.from_dict(values)


def test_animatediff_loop_names_and_lora_forms_are_understood():
    assert [MotionParams.from_dict({"closed_loop": name}).closed_loop for name in ("N", "R-P", "r+p", "A")] == \
        ["off", "loop", "loop+prompts", "loop-every-stride"]
    assert MotionParams.from_dict({"closed_loop": "loop motion and prompt travel"}).closed_loop == "loop+prompts"
    api = MotionParams.from_dict({"motion_lora": [{"name": "v2_lora_ZoomIn.ckpt", "strength": 0.8},
                                                  {"name": "v2_lora_PanLeft.ckpt"}]})
    assert api.motion_lora == (("v2_lora_ZoomIn.ckpt", 0.8), ("v2_lora_PanLeft.ckpt", 1.0))
    text = api.infotext()["I2V-Adapter motion LoRA"]
    assert text == "v2_lora_ZoomIn.ckpt:0.8, v2_lora_PanLeft.ckpt:1"
    assert MotionParams.from_dict({"motion_lora": text}) == api  # paste-back reads what the infotext wrote


def test_motion_only_refuses_an_api_image_by_name_and_ignores_a_panel_one():
    with pytest.raises(ParamsError, match="image is for videos from a picture; with motion_only"):
        split_arguments([{"enable": True, "motion_only": True, "image": "aGVsbG8="}])
    for key, value in (("last_image", "aGVsbG8="), ("loop", True)):
        with pytest.raises(ParamsError, match=f"{key} is for videos from a picture"):
            split_arguments([{"enable": True, "motion_only": True, key: value}])
    i2v, motion = split_arguments([{"enable": True, "motion_only": True, "loop": False}])
    assert motion.motion_only and i2v == [{"enable": True, "loop": False}]
    panel = [True, Image.new("RGB", (8, 8)), "", 1.0, 1.0, 0.5, 18.0, True, False, 1.0, None, False, None, ""]
    assert split_arguments(panel + ["mm.ckpt", 8, 8, 16, 4, ["GIF"], "motion only"])[1].motion_only


def test_video_settings_go_to_the_infotext():
    entries = MotionParams(motion_module="mm.ckpt", frames=24).infotext()
    assert entries["I2V-Adapter frames"] == "24" and entries["I2V-Adapter motion module"] == "mm.ckpt"
    assert entries["I2V-Adapter formats"] == "GIF"
    entries = MotionParams(formats=("MP4", "PNG")).infotext()
    assert entries["I2V-Adapter formats"] == "MP4, PNG"
    assert formats_from_infotext(entries) == ["MP4", "PNG"]
    assert formats_from_infotext({}) is None and formats_from_infotext({"I2V-Adapter formats": "AVI"}) is None


# -- windows ------------------------------------------------------------------------------------------

def _call(frames=10, chunks=2, channels=3):
    rows = frames * chunks
    x = torch.randn(rows, channels, 4, 4)
    c = {"c_crossattn": torch.randn(rows, 5, 8), "control": {"input": [torch.randn(rows, 3, 4, 4)]},
         "transformer_options": {"cond_mark": torch.tensor([1.0] * frames + [0.0] * frames),
                                 "sigmas": torch.arange(frames, dtype=torch.float32),
                                 "cond_or_uncond": [1, 0]}}
    return {"input": x, "timestep": torch.full((rows,), 3.0), "c": c, "cond_or_uncond": [1, 0]}


def _row_wise_unet(x, timestep, c_crossattn, control, transformer_options):
    # Each output row depends only on its own row of every input: windows must not change it.
    control_row = control["input"].pop()
    assert len(transformer_options["cond_mark"]) == x.shape[0]
    assert len(transformer_options["cond_indices"]) + len(transformer_options["uncond_indices"]) == x.shape[0]
    return x * 2 + c_crossattn.mean(dim=(1, 2))[:, None, None, None] + control_row + timestep[:, None, None, None]


def test_windows_give_the_direct_result_for_row_wise_models():
    frames = 10
    args = _call(frames)
    direct = _row_wise_unet(args["input"], args["timestep"], args["c"]["c_crossattn"],
                            {"input": list(args["c"]["control"]["input"])}, {**args["c"]["transformer_options"],
                            "cond_indices": list(range(10, 20)), "uncond_indices": list(range(10))})
    layout = FrameLayout(4, 0, keep_reference=True)
    windows = context_windows(frames, 4, 1)
    seen = []

    def apply_model(x, timestep, **c):
        seen.append(layout.window)
        return _row_wise_unet(x, timestep, **c)

    out = window_wrapper(windows, frames, layout)(apply_model, args)
    assert torch.allclose(out, direct, atol=1e-6)
    assert len(args["c"]["control"]["input"]) == 1  # the caller's control list is untouched
    assert [w.first_frame_position for w in seen] == [0 if 0 in w else None for w in windows]
    assert seen[0].first_frame_position == 0 and all(w.chunk_length == 4 for w in seen)


def test_overlapping_frames_get_the_mean_of_their_windows():
    frames = 6
    windows = [[0, 1, 2, 3], [2, 3, 4, 5]]
    calls = iter([1.0, 3.0])
    args = _call(frames)
    out = window_wrapper(windows, frames, FrameLayout(4))(
        lambda x, t, **c: torch.full_like(x, next(calls)), args)
    per_frame = out[:frames, 0, 0, 0].tolist()
    assert per_frame == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert torch.equal(out[:frames], out[frames:])


def test_other_batch_sizes_and_a_previous_wrapper_pass_through():
    frames = 6
    used = []

    def previous(apply_model, args):
        used.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    wrapper = window_wrapper([[0, 1, 2, 3], [2, 3, 4, 5]], frames, FrameLayout(4), previous)
    odd = _call(5, chunks=2)
    wrapper(lambda x, t, **c: x, odd)
    wrapper(lambda x, t, **c: x, _call(frames))
    assert used == [10, 8, 8]  # the odd call whole, then one call per window through the previous wrapper


# -- schedule and refusals ------------------------------------------------------------------------------

class _Predictor:
    def __init__(self):
        self.sigmas = torch.linspace(0.03, 14.6, 1000)

    def set_sigmas(self, sigmas):
        self.sigmas = sigmas.float()


def test_the_schedule_is_animatediffs_until_restored():
    predictor = _Predictor()
    forge_sigmas = predictor.sigmas.clone()
    override = forge2_motion.ScheduleOverride(predictor)
    override.apply()
    override.apply()  # twice (hires fix calls twice): the backup stays Forge's
    assert torch.equal(predictor.sigmas, animatediff_sigmas())
    assert 24 < float(predictor.sigmas[-1]) < 26
    override.restore()
    assert torch.equal(predictor.sigmas, forge_sigmas)


def test_timestep_samplers_alphas_follow_the_schedule():
    predictor = _Predictor()
    model = SimpleNamespace(alphas_cumprod=1.0 / (predictor.sigmas ** 2 + 1))  # made by an earlier DDIM run
    forge_alphas = model.alphas_cumprod.clone()
    override = forge2_motion.ScheduleOverride(predictor, model)
    override.apply()
    assert torch.allclose(model.alphas_cumprod, 1.0 / (animatediff_sigmas() ** 2 + 1))
    override.restore()
    assert torch.allclose(model.alphas_cumprod, forge_alphas)
    fresh = SimpleNamespace()  # no timestep sampler yet: nothing to keep in step
    forge2_motion.ScheduleOverride(_Predictor(), fresh).apply()
    forge2_motion.restore_schedule()
    assert not hasattr(fresh, "alphas_cumprod")


def test_a_schedule_left_set_is_restored_by_the_sweep():
    predictor = _Predictor()
    forge_sigmas = predictor.sigmas.clone()
    forge2_motion.ScheduleOverride(predictor).apply()  # a generation that died before its cleanup
    forge2_motion.restore_schedule()
    assert torch.equal(predictor.sigmas, forge_sigmas)
    forge2_motion.restore_schedule()  # nothing left: a no-op
    assert torch.equal(predictor.sigmas, forge_sigmas)


def _model(storage=torch.float16, **kinds):
    unet = SimpleNamespace(model=SimpleNamespace(storage_dtype=storage))
    return SimpleNamespace(forge_objects=SimpleNamespace(unet=unet), **kinds)


def test_models_that_cannot_take_a_motion_module_are_refused():
    assert forge2_motion.refusal(_model(is_sd1=True)) is None
    assert forge2_motion.refusal(_model(is_sd1=True, storage=torch.float8_e4m3fn)) is None
    assert forge2_motion.refusal(_model(is_sd1=False, is_sdxl=True)) is None
    assert "SD1.5 and SDXL checkpoints" in forge2_motion.refusal(_model(is_sd1=False, is_sd3=True))
    assert "the loaded one is Flux" in forge2_motion.refusal(type("Flux", (), {"is_sd1": False})())
    gguf = forge2_motion.refusal(_model(is_sd1=True, storage="gguf"))
    assert "stored as GGUF" in gguf and ".safetensors" in gguf and "Low Bits" not in gguf  # the file decides
    assert "stored as NF4" in forge2_motion.refusal(_model(is_sd1=True, storage="nf4"))


def test_a_motion_module_for_the_other_picture_model_is_refused_naming_both_files():
    import motion_models as mm

    checkpoint = SimpleNamespace(filename="/models/Stable-diffusion/sd_xl_base_1.0.safetensors")
    sdxl_model = _model(is_sd1=False, is_sdxl=True, sd_checkpoint_info=checkpoint)
    sd15_model = _model(is_sd1=True, sd_checkpoint_info=SimpleNamespace(filename="dreamshaper_8.safetensors"))
    sd15_module, sdxl_module = mm.random_motion_module("v3"), mm.random_motion_module("HotShot-XL")
    assert forge2_motion.mismatch(sdxl_model, sdxl_module, "hsxl_temporal_layers.safetensors") is None
    assert forge2_motion.mismatch(sd15_model, sd15_module, "v3_sd15_mm.ckpt") is None
    assert forge2_motion.mismatch(sdxl_model, sd15_module, "v3_sd15_mm.ckpt") == (
        "I2V-Adapter: v3_sd15_mm.ckpt is a motion module for SD1.5 and sd_xl_base_1.0.safetensors is an SDXL "
        "checkpoint: choose a motion module for SDXL (AnimateDiff-SDXL or HotShot-XL) or load an SD1.5 checkpoint.")
    assert forge2_motion.mismatch(sd15_model, sdxl_module, "hsxl_temporal_layers.safetensors") == (
        "I2V-Adapter: hsxl_temporal_layers.safetensors is a motion module for SDXL and dreamshaper_8.safetensors is an "
        "SD1.5 checkpoint: choose a motion module for SD1.5 (AnimateDiff v1-v3 or AnimateLCM) or load an SDXL "
        "checkpoint.")


def test_animatediff_sdxl_samples_with_its_scaled_linear_schedule():
    from i2v_adapter.motion.schedule import ANIMATEDIFF_SDXL_BETAS

    predictor = _Predictor()
    forge2_motion.ScheduleOverride(predictor, schedule=ANIMATEDIFF_SDXL_BETAS).apply()
    betas = torch.linspace(0.00085 ** 0.5, 0.020 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    assert torch.allclose(predictor.sigmas.double(), ((1 - alphas) / alphas).sqrt(), rtol=1e-5)
    forge2_motion.restore_schedule()


# -- files ----------------------------------------------------------------------------------------------

def test_every_format_is_written_with_the_infotext(tmp_path):
    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(4)]
    written = write_outputs(frames, tmp_path, 7, MotionParams(formats=("PNG", "WEBM", "GIF", "MP4", "WEBP")),
                            "a cat, I2V-Adapter: on")
    assert [p.name for p in written] == ["00000-7.gif", "00000-7.mp4", "00000-7.webm", "00000-7.webp", "00000-7"]
    assert all(p.stat().st_size > 0 for p in written[:4])
    webp = Image.open(written[3])
    assert webp.n_frames == 4 and webp.info["loop"] == 0
    assert "a cat, I2V-Adapter: on".encode("utf-16-be") in webp.info["exif"]
    written = written[:3] + written[4:]
    gif = Image.open(written[0])
    assert gif.n_frames == 4 and gif.info["comment"] == b"a cat, I2V-Adapter: on"
    pngs = sorted(written[3].iterdir())
    assert len(pngs) == 4 and Image.open(pngs[0]).info["parameters"] == "a cat, I2V-Adapter: on"
    assert b"I2V-Adapter: on" in written[1].read_bytes()
    again = write_outputs(frames, tmp_path, 7, MotionParams(formats=("GIF",)), "")
    assert again[0].name == "00001-7.gif"


def test_lossless_webp_keeps_every_pixel_and_quality_sets_the_rate_factor(tmp_path):
    from i2v_adapter.pipeline.video import constant_rate_factor, write_video

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(3)]
    lossless = Image.open(write_video(frames, tmp_path / "a.webp", lossless=True))
    lossy = Image.open(write_video(frames, tmp_path / "b.webp", quality=50))
    for index, frame in enumerate(frames):
        lossless.seek(index)
        lossy.seek(index)
        assert np.array_equal(np.asarray(lossless.convert("RGB")), frame)
        assert not np.array_equal(np.asarray(lossy.convert("RGB")), frame)
    assert constant_rate_factor(".mp4", 80) == 10 and constant_rate_factor(".mp4", 0) == 51
    assert constant_rate_factor(".webm", 100) == 0 and constant_rate_factor(".webm", 0) == 63
    small = write_video(frames * 3, tmp_path / "low.mp4", quality=10).stat().st_size
    large = write_video(frames * 3, tmp_path / "high.mp4", quality=95).stat().st_size
    assert small < large


def test_one_video_per_batch_with_the_videos_first(tmp_path, monkeypatch):
    from i2v_adapter.webui.forge2 import video as forge2_video

    monkeypatch.setattr(forge2_video, "output_folder", lambda p: tmp_path)
    pictures = [Image.new("RGB", (8, 8), (30 * i, 0, 0)) for i in range(6)]
    processed = SimpleNamespace(images=["grid"] + pictures, infotexts=["grid info"] + [f"info {i}" for i in range(6)],
                                index_of_first_image=1, all_seeds=[5, 5, 5, 9, 9, 9])
    written = forge2_video.add_to_results(SimpleNamespace(is_api=True), processed, 3,
                                          MotionParams(formats=("GIF", "PNG")))
    assert [path.name for path in written] == ["00000-5.gif", "00000-5", "00001-9.gif", "00001-9"]
    assert processed.images[0] == "grid" and len(processed.images) == 1 + 2 + 6
    assert all(isinstance(item, str) for item in processed.images[1:3]) and processed.images[3] is pictures[0]
    assert processed.infotexts[1:3] == ["info 0", "info 3"]
    assert Image.open(written[2]).info["comment"] == b"info 3"


def test_an_xyz_plot_cell_keeps_its_first_picture_first(tmp_path, monkeypatch):
    from i2v_adapter.webui import xyz
    from i2v_adapter.webui.forge2 import video as forge2_video

    monkeypatch.setattr(forge2_video, "output_folder", lambda p: tmp_path)
    plot, other = (SimpleNamespace(title=lambda name=name: name) for name in ("X/Y/Z plot", "Prompt matrix"))
    runner = SimpleNamespace(selectable_scripts=[other, plot])
    assert xyz.in_xyz_plot(SimpleNamespace(scripts=runner, script_args=(2, "x", 1)))
    assert not xyz.in_xyz_plot(SimpleNamespace(scripts=runner, script_args=(1, "x", 1)))
    assert not xyz.in_xyz_plot(SimpleNamespace(scripts=runner, script_args=(0, True)))
    assert not xyz.in_xyz_plot(SimpleNamespace())
    pictures = [Image.new("RGB", (8, 8), (30 * i, 0, 0)) for i in range(3)]
    processed = SimpleNamespace(images=list(pictures), infotexts=["info"] * 3, all_seeds=[5])
    forge2_video.add_to_results(SimpleNamespace(is_api=True), processed, 3, MotionParams(), videos_last=True)
    assert processed.images[:3] == pictures and isinstance(processed.images[3], str) and len(processed.infotexts) == 4


def test_an_xyz_cell_sets_the_strength_of_every_chosen_motion_lora():
    from i2v_adapter.webui import xyz

    motion = MotionParams(motion_lora=(("zoom.ckpt", 0.8), ("pan.ckpt", 1.0)))
    cell = SimpleNamespace(i2v_adapter_overrides={"motion_lora_strength": 0.3, "t0": 0.6})
    assert xyz.motion_overrides(cell, motion).motion_lora == (("zoom.ckpt", 0.3), ("pan.ckpt", 0.3))
    assert xyz.overrides(cell) == {"t0": 0.6}  # I2VParams gets only its own fields
    assert xyz.motion_overrides(SimpleNamespace(), motion) is motion
    assert xyz.motion_overrides(SimpleNamespace(i2v_adapter_overrides={"quality": 55.0}), motion).quality == 55


def test_a_missing_video_writer_is_named_before_anything_is_made(monkeypatch):
    import importlib.util

    from i2v_adapter.pipeline.video import missing_writer

    assert missing_writer([".mp4", ".gif"]) is None  # the test environment has imageio-ffmpeg
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "imageio_ffmpeg" else real_find_spec(name, *args))
    assert missing_writer([".gif", ".webp", ""]) is None  # Pillow writes these
    assert missing_writer([".gif", ".MP4"]) == "imageio-ffmpeg"
    assert missing_writer([".webm"]) == "imageio-ffmpeg"
