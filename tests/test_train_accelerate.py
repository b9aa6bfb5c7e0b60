"""Two processes under ``accelerate launch`` (DDP over gloo on CPU) equal one process with the doubled batch."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from i2v_adapter.hooks import find_attn1_layers
from i2v_adapter.weights.files import load_adapter_weights

from test_pipeline import TINY_MOTION_ARGS
from test_train import TRAIN_FRAMES, TRAIN_SIZE, TRAIN_STRIDE, one_thread, tiny_settings, train_files  # noqa: F401

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_processes(files, out: Path) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "i2v_adapter", "train", "--data", files["clips"], "--checkpoint", files["checkpoint"],
        "--motion-module", files["motion_module"], "--out", out, "--frames", TRAIN_FRAMES,
        "--resolution", TRAIN_SIZE, "--stride", TRAIN_STRIDE, "--batch-size", 1, "--steps", STEPS,
        "--learning-rate", 2e-3, "--workers", 0, "--no-progress", *TINY_MOTION_ARGS,
    ]
    # No GPU here: accelerate's CPU switch makes the two processes one gloo group.
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(part) for part in command], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_two_processes_equal_one_process_with_the_doubled_batch(train_files):  # noqa: F811
    from i2v_adapter.train.loop import train

    root = train_files["root"]
    launched = launch_two_processes(train_files, root / "two" / "adapter.safetensors")
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 process(es) x batch 1 x accumulation 1 = 2 samples per step" in launched.stdout + launched.stderr
    assert launched.stdout.count("wrote ") == 1  # the main process writes the file and says so

    single = train(tiny_settings(train_files, root / "one" / "adapter.safetensors", batch_size=2, steps=STEPS))

    two_log = [json.loads(line) for line in (root / "two" / "adapter-checkpoints" / "log.jsonl").open()]
    np.testing.assert_allclose([entry["loss"] for entry in two_log], single.losses, rtol=1e-5)
    two, one = load_adapter_weights(root / "two" / "adapter.safetensors"), load_adapter_weights(single.out)
    assert set(two.layers) == set(one.layers)
    # Float sums in another order differ in the last bits of a gradient, and Adam's normalisation enlarges that
    # where a gradient is near zero: compare the difference with what training changed, over all tensors.
    initial_q = {name: module.to_q.weight for name, module in find_attn1_layers(single.parts.unet).items()}
    difference, change = 0.0, 0.0
    for name, layer in one.layers.items():
        other = two.layers[name]
        for mine, theirs, start in ((layer.q_weight, other.q_weight, initial_q[name]),
                                    (layer.out_weight, other.out_weight, 0), (layer.out_bias, other.out_bias, 0)):
            difference += (theirs - mine).pow(2).sum().item()
            change += (mine - start).pow(2).sum().item()
    assert change > 0 and (difference / change) ** 0.5 < 1e-3, (difference, change)
    assert any(layer.out_weight.abs().max() > 0 for layer in two.layers.values())

    # Gradient accumulation: batch 1 over two micro-steps is the same optimizer step as batch 2.
    accumulated = train(tiny_settings(train_files, root / "accumulated" / "adapter.safetensors", batch_size=1,
                                      gradient_accumulation=2, steps=STEPS))
    np.testing.assert_allclose(accumulated.losses, single.losses, rtol=1e-5)
    again = load_adapter_weights(accumulated.out)
    for name, layer in one.layers.items():
        torch.testing.assert_close(again.layers[name].out_bias, layer.out_bias, rtol=1e-3, atol=2e-5)
