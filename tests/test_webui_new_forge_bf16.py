"""Forge 2 started with its UNet stored in bfloat16 (``--unet-in-bf16``): an 8-frame video with a motion module.

Runs when I2V_NEW_FORGE_DIR is set (see test_webui_new_forge.py). Forge 2 computes in float32 on a CPU whatever
the storage (its bf16 and fp16 checks answer no for a CPU device), so there this shows a bf16-stored UNet cast
per layer, with the motion module kept in the computation dtype; on a GPU the same case runs bf16 throughout.
"""
import os
import re

import pytest
from test_webui_new_forge import NEW_FORGE, motion_file, reference_frame_zero, timed_post, video_request  # noqa: F401
from webui_requests import FRAMES, check_frame_zero, level_difference, video_frames

pytestmark = pytest.mark.skipif(not NEW_FORGE, reason="I2V_NEW_FORGE_DIR is not set")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from pathlib import Path

    import webui_server
    from webui_requests import write_test_adapter

    write_test_adapter(Path(NEW_FORGE))
    extra = os.environ.get("I2V_NEW_FORGE_ARGS", "")
    os.environ["I2V_NEW_FORGE_ARGS"] = f"{extra} --unet-in-bf16"
    try:
        with webui_server.running(Path(NEW_FORGE), "I2V_NEW_FORGE", 7872,
                                  tmp_path_factory.mktemp("forge-bf16") / "forge.log", forge=True) as webui:
            yield webui
    finally:
        os.environ["I2V_NEW_FORGE_ARGS"] = extra


def test_a_unet_stored_in_bf16_makes_a_video(server, reference_frame_zero):
    video = video_frames(timed_post(server, "/sdapi/v1/img2img", video_request(motion_file("*v2*.safetensors"))))
    dtypes = re.findall(r"K-Model Created: \{'storage_dtype': ([\w.]+), 'computation_dtype': ([\w.]+)\}",
                        server.log_text())
    print(f"UNet storage and computation dtypes: {dtypes}")
    assert dtypes and dtypes[-1][0] == "torch.bfloat16"
    assert len(video) == FRAMES
    check_frame_zero("UNet in bf16", video[0], reference_frame_zero)
    assert max(level_difference(frame, video[0]) for frame in video[1:]) > 10
