"""An adapter written by the trainer, used in a real A1111 WebUI with an SD1.5 checkpoint, through the API; and an
SDXL adapter file refused with that checkpoint.

Runs only when I2V_WEBUI_DIR points at an A1111 checkout with sd-webui-animatediff, an SD1.5 motion module and an
SD1.5 single-file checkpoint (random weights are fine); the checkpoint's CLIP tokenizer must be in the Hugging
Face cache (HF_HOME), as the trainer reads it from there. Optional: I2V_WEBUI_PYTHON, I2V_WEBUI_PORT,
I2V_WEBUI_ARGS, as for the other A1111 tests. The module first trains a few steps on the WebUI's own checkpoint
and motion module (about 9 GB of memory), then starts the WebUI (about 10 GB).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_webui_a1111 import checkpoint, image, motion_module, reference_frame_zero  # noqa: F401 (fixtures)
from webui_requests import FRAMES, SIZE, check_frame_zero, level_difference, payload, video_frames

WEBUI = os.environ.get("I2V_WEBUI_DIR")
pytestmark = pytest.mark.skipif(not WEBUI, reason="I2V_WEBUI_DIR is not set")

ROOT = Path(__file__).resolve().parents[1]
TRAINED_FILE = "i2v_test_trained_sd15.safetensors"
UNTRAINED_FILE = "i2v_test_trained_sd15_out_zeroed.safetensors"
TRAIN_STEPS, TRAIN_FRAMES, TRAIN_STRIDE = 3, 4, 2


def write_training_clips(folder: Path) -> Path:
    from test_train import moving_square_frames, write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(3):
        write_mp4(folder / f"clip{index}.mp4", moving_square_frames(index, frames=12, side=SIZE))
        (folder / f"clip{index}.txt").write_text("a square moving")
    return folder


def run_trainer(args: list, log: Path) -> dict:
    """``python -m i2v_adapter train`` in its own process (its memory is gone before the WebUI starts)."""
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "i2v_adapter", "train", *map(str, args), "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=1800)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"seconds": time.time() - start, "stdout": result.stdout}


def zero_out_projections(trained: Path, out: Path) -> None:
    """The trained file with every to_out_ff zeroed: the branch then adds nothing, as at the start of training."""
    from i2v_adapter.weights.adapter import AdapterWeights, LayerWeights
    from i2v_adapter.weights.files import load_adapter_weights, save_adapter_weights

    weights = load_adapter_weights(trained)
    layers = {name: LayerWeights(layer.q_weight, 0 * layer.out_weight, 0 * layer.out_bias)
              for name, layer in weights.layers.items()}
    save_adapter_weights(AdapterWeights(layers, source_format="test"), out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, checkpoint, motion_module):
    """A few steps of the trainer on the WebUI's checkpoint and motion module, written where the WebUI looks."""
    from i2v_adapter.weights.files import load_adapter_weights

    root = tmp_path_factory.mktemp("trained-sd15")
    models = Path(WEBUI) / "models" / "I2V-Adapter"
    out = models / TRAINED_FILE
    run = run_trainer([
        "--data", write_training_clips(root / "clips"), "--checkpoint", checkpoint,
        "--motion-module", Path(WEBUI) / "extensions" / "sd-webui-animatediff" / "model" / motion_module,
        "--out", out, "--checkpoints-dir", root / "checkpoints", "--frames", TRAIN_FRAMES, "--resolution", SIZE,
        "--stride", TRAIN_STRIDE, "--steps", TRAIN_STEPS, "--learning-rate", 1e-3, "--workers", 0],
        root / "train.log")
    records = [json.loads(line) for line in (root / "checkpoints" / "log.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records]
    print(f"trained {len(losses)} steps in {run['seconds']:.0f} s (load included): losses "
          f"{', '.join(f'{loss:.4f}' for loss in losses)}; {run['stdout'].strip()}")
    assert f"16 layers, 24,793,280 parameters, steps 0..{TRAIN_STEPS}" in run["stdout"]
    assert len(losses) == TRAIN_STEPS and all(np.isfinite(losses))
    weights = load_adapter_weights(out)
    assert weights.base == "sd15" and all(layer.out_weight.abs().max() > 0 for layer in weights.layers.values())
    zero_out_projections(out, models / UNTRAINED_FILE)
    return out


@pytest.fixture(scope="module")
def sdxl_adapter_file():
    from test_webui_sdxl import SDXL_ADAPTER_FILE, write_sdxl_adapter

    models = Path(WEBUI) / "models" / "I2V-Adapter"
    models.mkdir(parents=True, exist_ok=True)
    write_sdxl_adapter(models)
    return SDXL_ADAPTER_FILE


@pytest.fixture(scope="module")
def webui(tmp_path_factory, trained, sdxl_adapter_file):
    import webui_server

    with webui_server.running(Path(WEBUI), "I2V_WEBUI", 7861, tmp_path_factory.mktemp("webui") / "webui.log") as server:
        yield server


def img2img_video(webui, motion_module, image, model: str) -> tuple[list, str]:
    import webui_server

    response = webui.post("/sdapi/v1/img2img", payload(motion_module, i2v={"enable": True, "model": model},
                                                       init_images=[webui_server.encode_png(image)]))
    return video_frames(response), json.loads(response.json()["info"])["infotexts"][0]


def test_trained_adapter_video_starts_with_the_image_and_uses_the_trained_weights(webui, motion_module, image,
                                                                                 reference_frame_zero):
    frames, info = img2img_video(webui, motion_module, image, TRAINED_FILE)
    assert len(frames) == FRAMES
    check_frame_zero("trained adapter", frames[0], reference_frame_zero)
    assert f"I2V-Adapter model: {TRAINED_FILE}" in info
    training_free, _ = img2img_video(webui, motion_module, image, "")
    untrained, _ = img2img_video(webui, motion_module, image, UNTRAINED_FILE)
    versus_free = max(level_difference(a, b) for a, b in zip(frames[1:], training_free[1:]))
    versus_untrained = max(level_difference(a, b) for a, b in zip(frames[1:], untrained[1:]))
    print(f"frames 1..: trained vs training-free {versus_free} levels, trained vs the same file with to_out_ff "
          f"zeroed {versus_untrained} levels; frame 0 of both others vs decode(z0) "
          f"{level_difference(training_free[0], reference_frame_zero)}, "
          f"{level_difference(untrained[0], reference_frame_zero)}")
    assert versus_free > 10
    assert versus_untrained > 10  # the trained out-projections reach the WebUI's video


def test_sdxl_adapter_with_sd15_is_refused_naming_both(webui, motion_module, image, sdxl_adapter_file):
    import webui_server

    response = webui.post("/sdapi/v1/img2img", payload(motion_module, i2v={"enable": True, "model": sdxl_adapter_file},
                                                       init_images=[webui_server.encode_png(image)]))
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    print(f"refused: {detail}")
    assert "was made for SDXL" in detail and "is SD1.5/SD2 (16 attention layers)" in detail
