"""`generate` without model flags: the standard files from a hub cache laid out as huggingface_hub lays it out.

The cache holds tiny random files in the real formats under the real repository and file names: an fp16
diffusers SD folder, an original-layout AnimateDiff v2 motion module (.ckpt pickle), an official-format
i2v_module.pth, and a CLIP tokenizer. Every test runs offline (HF_HUB_OFFLINE=1, and in-process no socket
may connect).
"""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save

from i2v_adapter.cli import main
from i2v_adapter.hooks import find_attn1_layers, layer_channels
from i2v_adapter.pipeline import hub_files
from i2v_adapter.pipeline.hub_files import ADAPTER, CLIP_TOKENIZER, MOTION_MODULE, SD15_BASE
from i2v_adapter.weights.naming import ldm_to_diffusers

import hub_cache
import models
import weight_fixtures as wf
from test_pipeline import FRAMES, SIZE, STEPS, TINY_MOTION_ARGS, tiny_motion_adapter, to_original_layout, \
    write_tiny_diffusers_folder

ROOT = Path(__file__).resolve().parents[1]


def _fp16_safetensors(plain: Path) -> bytes:
    """The hub's ``*.fp16.safetensors`` variant of a diffusers/transformers weights file."""
    return save({name: tensor.half() for name, tensor in load_file(str(plain)).items()}, metadata={"format": "pt"})


def sd15_base_files(plain_folder: Path) -> dict[str, bytes]:
    """SD15_BASE's file list, filled from a tiny plain diffusers folder."""
    files = {}
    for name in SD15_BASE.filenames:
        if ".fp16." in name:
            files[name] = _fp16_safetensors(plain_folder / name.replace(".fp16.", "."))
        elif name.startswith("tokenizer/"):
            files[name] = hub_cache.tokenizer_file(plain_folder / "tokenizer", name.removeprefix("tokenizer/"))
        else:
            files[name] = (plain_folder / name).read_bytes()
    return files


def tokenizer_files(plain_folder: Path) -> dict[str, bytes]:
    return {name: hub_cache.tokenizer_file(plain_folder / "tokenizer", name) for name in CLIP_TOKENIZER.filenames}


def pickled(state_dict: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def tiny_official_adapter() -> dict:
    """``i2v_module.pth`` layout for the tiny UNet's attn1 layers, large enough to change the frames."""
    channels = layer_channels(find_attn1_layers(models.diffusers_unet()))
    blocks = {ldm_to_diffusers(name).removesuffix(".transformer_blocks.0.attn1"): width
              for name, width in channels.items()}
    return {key: tensor * 10 for key, tensor in wf.official_state_dict(blocks=blocks, seed=3).items()}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    plain = write_tiny_diffusers_folder(root / "plain-sd")
    motion = to_original_layout(tiny_motion_adapter(mid_block=True, max_frames=32).state_dict())
    image = root / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(image)
    return {"root": root, "plain": plain, "image": image, "repos": {
        SD15_BASE.repo_id: sd15_base_files(plain),
        MOTION_MODULE.repo_id: {MOTION_MODULE.filenames[0]: pickled(motion)},
        ADAPTER.repo_id: {ADAPTER.filenames[0]: pickled(tiny_official_adapter())},
        CLIP_TOKENIZER.repo_id: tokenizer_files(plain),
    }}


@pytest.fixture(scope="module")
def full_cache(tiny_files):
    cache = tiny_files["root"] / "hub-cache"
    for repo_id, files in tiny_files["repos"].items():
        hub_cache.add_to_cache(cache, repo_id, files)
    return cache


@pytest.fixture
def offline(monkeypatch):
    return lambda cache: hub_cache.go_offline(monkeypatch, cache)


def quick_args(tiny_files, out, *extra):
    return ["generate", "--image", tiny_files["image"], "--prompt", "a cat", "--frames", FRAMES, "--steps", STEPS,
            "--width", SIZE, "--height", SIZE, "--out", out, *TINY_MOTION_ARGS, *extra]


def run_main(capsys, args):
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def frames_of(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.iterdir())]


# ---------------------------------------------------------------- the cache itself


def test_the_cache_reads_as_huggingface_hubs_own(full_cache):
    from huggingface_hub import scan_cache_dir

    report = scan_cache_dir(full_cache)

    assert report.warnings == []
    files = {repo.repo_id: {f.file_name for revision in repo.revisions for f in revision.files}
             for repo in report.repos}
    assert files == {spec.repo_id: {Path(name).name for name in spec.filenames}
                     for spec in (SD15_BASE, MOTION_MODULE, ADAPTER, CLIP_TOKENIZER)}


# ---------------------------------------------------------------- the one command


def test_generate_without_model_flags_writes_the_video(tiny_files, full_cache, offline):
    import imageio_ffmpeg

    offline(full_cache)
    out = tiny_files["root"] / "cat.mp4"
    result = subprocess.run([sys.executable, "-m", "i2v_adapter", *map(str, quick_args(tiny_files, out))],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())

    assert result.returncode == 0, result.stderr
    assert "fetching" not in result.stderr and "Traceback" not in result.stderr
    assert f"wrote {out}: {FRAMES} frames, {SIZE}x{SIZE}" in result.stdout
    assert "adapter i2v_module.pth" in result.stdout
    reader = imageio_ffmpeg.read_frames(str(out))
    assert next(reader)["size"] == (SIZE, SIZE)
    assert sum(1 for _ in reader) == FRAMES


def test_defaults_are_the_cached_files_and_each_flag_overrides_its_own(tiny_files, full_cache, offline, capsys,
                                                                      tmp_path):
    offline(full_cache)
    snapshot = {repo: hub_cache.repo_folder(full_cache, repo) / "snapshots" for repo in tiny_files["repos"]}
    local = {repo: next(folder.iterdir()) for repo, folder in snapshot.items()}
    explicit = ["--checkpoint", local[SD15_BASE.repo_id],
                "--motion-module", local[MOTION_MODULE.repo_id] / MOTION_MODULE.filenames[0],
                "--adapter", local[ADAPTER.repo_id] / ADAPTER.filenames[0]]
    root = tiny_files["root"]

    assert run_main(capsys, quick_args(tiny_files, root / "defaults", "--no-progress"))[0] == 0
    offline(tmp_path / "empty")   # the flags alone must do: no default is looked up
    assert run_main(capsys, quick_args(tiny_files, root / "flags", "--no-progress", *explicit))[0] == 0
    offline(full_cache)
    status, out, _ = run_main(capsys, quick_args(tiny_files, root / "free", "--no-progress", "--training-free"))

    defaults, flags = frames_of(root / "defaults"), frames_of(root / "flags")
    assert len(defaults) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(defaults, flags))
    # The default adapter is really applied: training-free mode (no adapter fetched) moves other pixels.
    assert status == 0 and "training-free" in out
    free = frames_of(root / "free")
    assert np.array_equal(free[0], defaults[0])      # frame 0 is the image's latent either way
    assert any(not np.array_equal(a, b) for a, b in zip(free[1:], defaults[1:]))


# ---------------------------------------------------------------- missing files


def test_offline_without_the_files_is_one_sentence(tiny_files, tmp_path, offline):
    offline(tmp_path / "empty-cache")
    out = tmp_path / "cat.mp4"
    result = subprocess.run([sys.executable, "-m", "i2v_adapter", *map(str, quick_args(tiny_files, out))],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: offline (HF_HUB_OFFLINE is set), and the Hugging Face cache")
    for fragment in ("stable-diffusion-v1-5/stable-diffusion-v1-5: unet/, vae/, text_encoder/, tokenizer/",
                     "guoyww/animatediff: mm_sd_v15_v2.ckpt", "space-xun/i2v_adapter: i2v_module.pth",
                     "give local files with --checkpoint, --motion-module, --adapter"):
        assert fragment in line
    assert not out.exists()


def test_only_the_missing_defaults_are_named(tiny_files, tmp_path, offline, capsys):
    cache = tmp_path / "cache"
    hub_cache.add_to_cache(cache, MOTION_MODULE.repo_id, tiny_files["repos"][MOTION_MODULE.repo_id])
    offline(cache)

    status, out, err = run_main(capsys, quick_args(tiny_files, tmp_path / "x.gif", "--checkpoint",
                                                   tiny_files["plain"]))

    assert (status, out) == (1, "")
    assert err.count("\n") == 1
    assert "lacks the I2V-Adapter weights (space-xun/i2v_adapter: i2v_module.pth): " in err
    assert err.rstrip().endswith("give local files with --adapter")
    assert "stable-diffusion" not in err and "animatediff" not in err


# ---------------------------------------------------------------- first use (downloads replaced by a local copy)


def fake_hub(monkeypatch, cache: Path, remote: dict[str, dict[str, bytes]], calls: list):
    """``hf_hub_download`` that copies from ``remote`` into ``cache`` as the real one would."""
    import huggingface_hub
    from huggingface_hub import constants

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        snapshot = hub_cache.add_to_cache(cache, repo_id, {filename: remote[repo_id][filename]})
        return str(snapshot / filename)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def test_first_use_fetches_the_missing_files_once(tiny_files, tmp_path, monkeypatch):
    from transformers import CLIPTokenizer

    cache, calls, log = tmp_path / "cache", [], io.StringIO()
    hub_cache.add_to_cache(cache, MOTION_MODULE.repo_id, tiny_files["repos"][MOTION_MODULE.repo_id])
    fake_hub(monkeypatch, cache, tiny_files["repos"], calls)

    tokenizer_folder, motion_module = hub_files.fetch([CLIP_TOKENIZER, MOTION_MODULE], log)

    assert calls == [(CLIP_TOKENIZER.repo_id, name) for name in CLIP_TOKENIZER.filenames]
    assert log.getvalue() == (f"fetching the CLIP tokenizer from openai/clip-vit-large-patch14 (vocab.json, "
                              f"merges.txt, tokenizer_config.json, special_tokens_map.json) into {cache}\n")
    assert motion_module.read_bytes() == tiny_files["repos"][MOTION_MODULE.repo_id]["mm_sd_v15_v2.ckpt"]
    cached = CLIPTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
    original = CLIPTokenizer.from_pretrained(tiny_files["plain"] / "tokenizer", local_files_only=True)
    assert cached("a white cat").input_ids == original("a white cat").input_ids

    again = io.StringIO()
    assert hub_files.fetch([CLIP_TOKENIZER, MOTION_MODULE], again) == [tokenizer_folder, motion_module]
    assert len(calls) == len(CLIP_TOKENIZER.filenames) and again.getvalue() == ""


def test_a_failed_download_is_one_sentence(tiny_files, tmp_path, monkeypatch):
    import huggingface_hub

    fake_hub(monkeypatch, tmp_path / "cache", tiny_files["repos"], [])

    def unreachable(repo_id, filename, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'\n(name resolution)")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(hub_files.HubFilesUnavailable) as caught:
        hub_files.fetch([ADAPTER], io.StringIO())

    assert str(caught.value) == (
        "cannot fetch from the hub (ConnectionError: Failed to resolve 'huggingface.co' (name resolution)), and "
        f"the Hugging Face cache ({tmp_path / 'cache'}) lacks the I2V-Adapter weights (space-xun/i2v_adapter: "
        "i2v_module.pth): connect once so they can be fetched, or give local files with --adapter")
