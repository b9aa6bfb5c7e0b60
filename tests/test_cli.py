"""``python -m i2v_adapter convert|inspect``: run as a user would (subprocess), plus edge cases through main()."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from i2v_adapter.cli import main
from i2v_adapter.weights.files import load_adapter_weights

import weight_fixtures as wf

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "i2v_adapter", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def ipplus_with_sd15_adapter(tmp_path_factory):
    """A whole-UNet file holding the full SD1.5 adapter (fp16) and a motion module."""
    adapter = wf.official_state_dict(torch.float16, seed=5)
    path = tmp_path_factory.mktemp("cli") / "animatediff_v15_v1_ipplus.pth"
    torch.save(wf.ipplus_state_dict(adapter=adapter), path)
    return path, adapter


def test_convert_with_motion_module_then_inspect(tmp_path, ipplus_with_sd15_adapter):
    source, adapter = ipplus_with_sd15_adapter
    out, motion_out = tmp_path / "i2v_sd15.safetensors", tmp_path / "mm_v1.safetensors"

    converted = run_cli("convert", source, out, "--motion-module", motion_out)

    assert converted.returncode == 0, converted.stderr
    assert converted.stderr == ""
    assert f"wrote {out}: 16 layers, 24,793,280 parameters, base sd15, from the ipplus format" in converted.stdout
    assert f"wrote {motion_out}: motion module, 27 tensors" in converted.stdout
    weights = load_adapter_weights(out)
    assert weights.source_format == "own" and weights.metadata["source_format"] == "ipplus"
    layer = weights.layers["input_blocks.1.1.transformer_blocks.0.attn1"]
    assert torch.equal(layer.q_weight, adapter["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_ff.weight"])
    with safe_open(str(motion_out), framework="pt") as handle:
        assert set(handle.keys()) == set(wf.motion_module_state_dict())

    inspected = run_cli("inspect", out)

    assert inspected.returncode == 0, inspected.stderr
    report = inspected.stdout
    assert "format:          own" in report
    assert "base model:      sd15" in report
    assert "adapter layers:  16" in report
    assert "parameters:      24,793,280" in report
    assert "dtype:           float16" in report
    assert "motion module:   no" in report
    assert "source_format=ipplus" in report


def test_corrupt_file_is_one_error_line(tmp_path):
    corrupt = tmp_path / "i2v_module.pth"
    corrupt.write_bytes(b"\x80\x02not really a pickle" * 50)

    result = run_cli("convert", corrupt, tmp_path / "out.safetensors")

    assert_one_line_error(result, str(corrupt), "not a readable weights file")
    assert not (tmp_path / "out.safetensors").exists()


def test_output_must_be_safetensors(tmp_path):
    source = tmp_path / "i2v_module.pth"
    torch.save(wf.official_state_dict(blocks=wf.TINY_BLOCKS), source)

    result = run_cli("convert", source, tmp_path / "out.pth")

    assert_one_line_error(result, "out.pth", "must end in .safetensors")
    assert not (tmp_path / "out.pth").exists()


# The rest calls main() in this process: the same code without the cost of starting Python and torch.


def run_main(capsys, *args):
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_inspect_whole_unet_reports_its_motion_module(tmp_path, capsys):
    path = tmp_path / "unet.pth"
    torch.save(wf.ipplus_state_dict(with_adapter=False), path)

    status, out, err = run_main(capsys, "inspect", path)

    assert (status, err) == (0, "")
    assert "format:          ipplus" in out
    assert "adapter layers:  0" in out
    assert "motion module:   yes, 27 tensors, AnimateDiff v1 layout (24 frames)" in out
    assert "no I2V-Adapter weights" in out


def test_motion_module_is_written_even_when_the_unet_has_no_adapter(tmp_path, capsys):
    source = tmp_path / "unet.pth"
    torch.save(wf.ipplus_state_dict(with_adapter=False), source)
    out_path, motion_out = tmp_path / "adapter.safetensors", tmp_path / "mm.safetensors"

    status, out, err = run_main(capsys, "convert", source, out_path, "--motion-module", motion_out)

    assert status == 1
    assert f"wrote {motion_out}: motion module, 27 tensors" in out
    assert err.splitlines() == [
        f"error: {source} is a whole UNet/motion module without I2V-Adapter weights; "
        "the trained adapter is the official i2v_module.pth"
    ]
    assert motion_out.exists() and not out_path.exists()


def test_inspect_corrupt_file_and_untrained_adapter(tmp_path, capsys):
    corrupt = tmp_path / "broken.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    status, out, err = run_main(capsys, "inspect", corrupt)
    assert (status, out) == (1, "")
    assert err.startswith("error: ") and "not a readable safetensors file" in err and len(err.splitlines()) == 1

    untrained = tmp_path / "untrained.pth"
    adapter = wf.official_state_dict(blocks=wf.TINY_BLOCKS)
    torch.save({k: torch.zeros_like(t) if "to_out_ff" in k else t for k, t in adapter.items()}, untrained)
    status, out, err = run_main(capsys, "convert", untrained, tmp_path / "untrained.safetensors")
    assert (status, err) == (0, "")
    assert "note: to_out_ff is all zero" in out
