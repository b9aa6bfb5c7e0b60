"""Command line: ``i2v-adapter convert|inspect|generate ...`` (the same as ``python -m i2v_adapter ...``).

Each subcommand is one function taking the parsed arguments and returning the exit status, registered by a
function listed in :func:`_registrars`. Expected failures (bad files, I/O) become one ``error: ...`` line and
status 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .weights.adapter import BASE_LABELS, WeightsError

_UNTRAINED = "to_out_ff is all zero: this adapter is untrained and changes nothing (use the official i2v_module.pth)"


def _convert(args) -> int:
    from .weights.files import (
        adapter_output_is_zero,
        extract_motion_module,
        load_adapter_weights,
        require_safetensors_name,
        save_adapter_weights,
    )

    # Output names are checked before the (possibly slow) read of the input.
    require_safetensors_name(args.output)
    if args.motion_module:
        require_safetensors_name(args.motion_module)
        # The motion module first: a whole-UNet file without adapter tensors still yields it.
        count = extract_motion_module(args.input, args.motion_module)
        print(f"wrote {args.motion_module}: motion module, {count} tensors")
    weights = load_adapter_weights(args.input)
    save_adapter_weights(weights, args.output)
    ignored = len(weights.ignored_keys)
    print(
        f"wrote {args.output}: {len(weights.layers)} layers, {weights.parameter_count:,} parameters, "
        f"base {weights.base}, from the {weights.source_format} format"
        + (f" ({ignored} other {'key' if ignored == 1 else 'keys'} ignored)" if ignored else "")
    )
    if adapter_output_is_zero(weights):
        print(f"note: {_UNTRAINED}")
    return 0


def _yes_no(flag) -> str:
    return "yes" if flag else "no"


def _inspect(args) -> int:
    from .weights.files import describe_weights_file

    info = describe_weights_file(args.file)
    lines = [
        f"file:            {info['path']}",
        f"format:          {info['format']}",
        f"base model:      {info['base']} ({BASE_LABELS.get(info['base'], info['base'])})",
        f"adapter layers:  {info['layers']}",
        f"parameters:      {info['parameters']:,}",
        f"dtype:           {info['dtype']}",
        f"ignored keys:    {info['ignored_keys']}"
        + (" (" + ", ".join(f"{name} {count}" for name, count in info["ignored_families"].items()) + ")"
           if info["ignored_families"] else ""),
        f"motion module:   {_yes_no(info['motion_module'])}"
        + (f", {info['motion_module_tensors']} tensors, {info['motion_module_version']}"
           if info["motion_module"] else ""),
    ]
    if info["metadata"]:
        lines.append("metadata:        " + ", ".join(f"{k}={v}" for k, v in sorted(info["metadata"].items())))
    if info["layers"] == 0:
        lines.append("note:            no I2V-Adapter weights in this file")
    elif info["adapter_output_is_zero"]:
        lines.append(f"note:            {_UNTRAINED}")
    print("\n".join(lines))
    return 0


def _add_command(subparsers, name: str, function, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(run=function)
    return parser


def _register_convert(subparsers, add_command) -> argparse.ArgumentParser:
    convert = add_command(
        subparsers, "convert", _convert,
        "Convert adapter weights (official .pth, unofficial, ipplus UNet, ours) to our .safetensors format.",
    )
    convert.add_argument("input", metavar="IN", help="weights file in any accepted format")
    convert.add_argument("output", metavar="OUT.safetensors", help="adapter file to write")
    convert.add_argument(
        "--motion-module", metavar="OUT2.safetensors",
        help="also write the file's AnimateDiff motion module (ipplus UNet files) for sd-webui-animatediff",
    )
    return convert


def _register_inspect(subparsers, add_command) -> argparse.ArgumentParser:
    inspect = add_command(subparsers, "inspect", _inspect, "Describe a weights file.")
    inspect.add_argument("file", metavar="FILE")
    return inspect


def _registrars():
    """One function per subcommand, each ``(subparsers, add_command) -> parser``, in the order --help lists them.

    A subcommand in its own module registers the same way: import its function here and add it to the list.
    """
    from .pipeline_cli import add_generate_command  # argparse only; diffusers is imported when it runs
    from .train.cli_args import add_train_command  # argparse only; torch and accelerate load when it runs

    return [_register_convert, _register_inspect, add_generate_command, add_train_command]


def program_name() -> str:
    """``python -m i2v_adapter`` when run so, else the installed command's name."""
    return "python -m i2v_adapter" if Path(sys.argv[0]).name == "__main__.py" else "i2v-adapter"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(), description="I2V-Adapter tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(subparsers, _add_command)
    return parser


def _error_line(error: BaseException) -> str:
    return "error: " + (" ".join(str(error).split()) or type(error).__name__)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (WeightsError, OSError, ValueError) as error:
        print(_error_line(error), file=sys.stderr)
        return 1
