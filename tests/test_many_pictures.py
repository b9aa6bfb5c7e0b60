"""Several pictures, one video each: reading a list or a folder, refusals, and the per-video switch."""
import base64
import io
import re
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from i2v_adapter.params import I2VParams, ParamsError
from i2v_adapter.pictures import pictures_in_folder, pictures_of_values


def picture(colour) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), colour, np.uint8))


def base64_png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_folder_gives_its_pictures_by_name_and_names_the_unreadable_ones(tmp_path):
    picture((200, 0, 0)).save(tmp_path / "b.png")
    picture((0, 200, 0)).save(tmp_path / "a.jpg")
    (tmp_path / "c.png").write_bytes(b"not a picture")
    (tmp_path / "notes.txt").write_text("not a picture either, and not one by its name")
    pictures, skipped = pictures_in_folder(tmp_path)
    assert [p.name for p in pictures] == ["a", "b"] and skipped == ["c.png"]
    assert pictures[1].image.mode == "RGB" and pictures[1].image.getpixel((0, 0)) == (200, 0, 0)


class NamedString(str):
    """gradio 4's upload value: the path, as a string that also has it in ``name``."""

    def __new__(cls, path):
        text = super().__new__(cls, path)
        text.name = path
        return text


def test_a_list_takes_uploads_pictures_and_base64_in_order_and_no_plain_path(tmp_path):
    picture((10, 20, 30)).save(tmp_path / "upload.png")
    upload = SimpleNamespace(name=str(tmp_path / "upload.png"))  # gradio 3's file object
    values = [upload, NamedString(str(tmp_path / "upload.png")), picture((1, 2, 3)), base64_png(picture((4, 5, 6))),
              "bm90IGEgcGljdHVyZQ==", str(tmp_path / "upload.png")]
    pictures, skipped = pictures_of_values(values)
    assert [p.name for p in pictures] == ["upload", "upload", "picture-3", "picture-4"]
    assert pictures[3].image.getpixel((0, 0)) == (4, 5, 6)
    assert skipped == ["picture 5", "picture 6"]  # a server path sent as a string is not read


def test_the_request_gives_images_or_a_folder_not_both():
    assert I2VParams.from_dict({"images": ["x"]}).many_pictures
    assert I2VParams.from_dict({"folder": " /data/shots "}).many_pictures
    assert not I2VParams.from_dict({"images": [], "folder": ""}).many_pictures
    with pytest.raises(ParamsError, match="images or as a folder, not both"):
        I2VParams.from_dict({"images": ["x"], "folder": "/data"})
    with pytest.raises(ParamsError, match="images must be a list"):
        I2VParams.from_dict({"images": "x"})
    with pytest.raises(ParamsError, match="folder must be a folder's path"):
        I2VParams.from_dict({"folder": 3})


@pytest.fixture
def shared(monkeypatch):
    options = SimpleNamespace(hide_ui_dir_config=False)
    state = SimpleNamespace(textinfo=None)
    modules = types.ModuleType("modules")
    modules.shared = SimpleNamespace(cmd_opts=options, state=state)
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.shared", modules.shared)
    return modules.shared


def test_resolving_sets_the_batch_count_and_refuses_with_one_sentence(tmp_path, shared):
    from i2v_adapter.webui import many
    from i2v_adapter.webui.lifecycle import I2VAdapterError

    for name, colour in (("a", 10), ("b", 20), ("c", 30)):
        picture((colour,) * 3).save(tmp_path / f"{name}.png")
    p = SimpleNamespace(n_iter=1)
    pictures = many.resolve(p, I2VParams.from_dict({"enable": True, "folder": str(tmp_path)}))
    assert p.n_iter == 3 and [x.name for x in getattr(p, many.PICTURES)] == ["a", "b", "c"] == [x.name for x in pictures]
    assert many.resolve(SimpleNamespace(n_iter=1), I2VParams.from_dict({"enable": True})) is None

    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [({"folder": str(empty)}, "holds no pictures"), ({"folder": str(tmp_path / "nowhere")}, "no folder"),
             ({"images": ["bm90IGEgcGljdHVyZQ=="]}, "none of the pictures could be read (picture 1)"),
             ({"folder": str(tmp_path), "ip_adapter": True}, "IP-Adapter option takes one picture")]
    for values, expected in cases:
        with pytest.raises(I2VAdapterError, match=re.escape(expected)):
            many.resolve(SimpleNamespace(n_iter=1), I2VParams.from_dict({"enable": True, **values}))
    shared.cmd_opts.hide_ui_dir_config = True
    with pytest.raises(I2VAdapterError, match="--hide-ui-dir-config"):
        many.resolve(SimpleNamespace(n_iter=1), I2VParams.from_dict({"enable": True, "folder": str(tmp_path)}))


def test_each_iteration_switches_frame_zero_to_its_picture(shared):
    from i2v_adapter.layout import FrameLayout
    from i2v_adapter.pictures import NamedPicture
    from i2v_adapter.webui.generation import Generation

    generation = object.__new__(Generation)
    generation.p = SimpleNamespace(iteration=0, extra_generation_params={})
    generation.params = I2VParams(loop=True)
    generation.pictures = [NamedPicture("a", picture(10)), NamedPicture("b", picture(20))]
    generation.video_index = None
    generation.layout = FrameLayout(4)
    generation.z0 = generation.z_last = "stale"
    for iteration, name in ((0, "a"), (0, "a"), (1, "b")):
        generation.p.iteration = iteration
        generation.next_picture()
        assert generation.image is generation.pictures[iteration].image
        assert generation.p.extra_generation_params["I2V-Adapter picture"] == name
        assert shared.state.textinfo == f"I2V-Adapter: video {iteration + 1} of 2 ({name})"
        assert generation.z0 is None and generation.z_last is None  # the next latents are this picture's


def test_the_batch_tab_makes_one_generation_of_its_pictures_and_hands_other_requests_over(tmp_path, monkeypatch,
                                                                                           shared):
    from i2v_adapter.webui import batch_tab, lifecycle, many

    for name, colour in (("x", 10), ("y", 20)):
        picture((colour,) * 3).save(tmp_path / f"{name}.png")
    (tmp_path / "z.png").write_bytes(b"broken")
    calls = []
    img2img = types.ModuleType(batch_tab.MODULE)
    img2img.process_batch = lambda p, source, output_dir, mask_dir, args, *rest, **options: calls.append(("webui", p))
    processing = SimpleNamespace(process_images=lambda p: calls.append(("process_images", p)) or "processed")
    runner = SimpleNamespace(run=lambda p, *args: None)
    monkeypatch.setitem(sys.modules, batch_tab.MODULE, img2img)
    modules = sys.modules["modules"]
    modules.processing, modules.scripts = processing, SimpleNamespace(scripts_img2img=runner)
    monkeypatch.setitem(sys.modules, "modules.processing", processing)
    monkeypatch.setitem(sys.modules, "modules.scripts", modules.scripts)
    original = img2img.process_batch

    ours, other = SimpleNamespace(n_iter=1, outpath_samples="out"), SimpleNamespace(n_iter=1)
    batch_tab.wrap(ours)
    assert img2img.process_batch is not original
    assert img2img.process_batch(ours, str(tmp_path), " shots ", "", ()) == "processed"
    assert img2img.process_batch is original  # removed at its first call
    assert [x.name for x in getattr(ours, many.PICTURES)] == ["x", "y"] and ours.n_iter == 2
    assert ours.outpath_samples == "shots" and calls == [("process_images", ours)]

    batch_tab.wrap(ours)
    img2img.process_batch(other, str(tmp_path), "", "", ())  # another request: the WebUI's own batch
    assert calls[-1] == ("webui", other) and img2img.process_batch is original
    batch_tab.wrap(ours)
    lifecycle.sweep()
    assert img2img.process_batch is original


def test_animatediffs_videos_are_named_after_the_pictures_and_each_gets_its_infotext(monkeypatch, tmp_path):
    from pathlib import Path

    from i2v_adapter.webui import animatediff, lifecycle

    class AnimateDiffOutput:  # as sd-webui-animatediff: one _save per video, then the files replace the frames
        def output(self, p, res, params):
            paths = []
            for video, index in enumerate(range(0, len(res.images), 4)):
                paths += self._save(params, res.images[index:index + 4], Path(f"/out/0000{video}-{100 + index}"),
                                    res, index)
            res.images = paths + ["frame"] * 4  # the API's way: the files, then the last video's frames

        def _save(self, params, frame_list, video_path_prefix, res, index):
            return [f"{video_path_prefix}.gif", f"{video_path_prefix}.mp4"]

    module = types.ModuleType(animatediff.OUTPUT_MODULE)
    module.AnimateDiffOutput = AnimateDiffOutput
    monkeypatch.setitem(sys.modules, animatediff.OUTPUT_MODULE, module)
    res = SimpleNamespace(images=list(range(8)), infotexts=[f"video {i // 4} frame {i % 4}" for i in range(8)])
    animatediff.name_videos_after(["cat", "dog"])
    AnimateDiffOutput().output(None, res, None)
    assert res.images[:4] == ["/out/00000-cat-100.gif", "/out/00000-cat-100.mp4", "/out/00001-dog-104.gif",
                              "/out/00001-dog-104.mp4"]
    assert res.infotexts == ["video 0 frame 0"] * 2 + ["video 1 frame 0"] * 2 + [f"video 1 frame {i}" for i in range(4)]
    lifecycle.sweep()
    assert "output" in AnimateDiffOutput.__dict__ and not hasattr(AnimateDiffOutput.__dict__["output"],
                                                                   "i2v_adapter_original")
