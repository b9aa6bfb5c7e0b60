"""`pip install .`: the wheel holds the engine package and the `i2v-adapter` command, and declares what it imports.

The wheel is built offline from a copy of the checkout (a build writes build/ and *.egg-info beside the
sources), with the build backend already in the environment: `pip wheel --no-deps --no-build-isolation`.
"""
import ast
import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "i2v_adapter"
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "build", "dist",
                                      "*.egg-info", "outputs")
# Modules that may use the optional extras; the rest of the engine needs the core dependencies only.
_EXTRA_USERS = ("pipeline/", "pipeline_cli.py", "train/", "motion/diffusers_layout.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools", reason="the build backend (setuptools) is not installed")
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES, symlinks=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = (work / "dist").glob("*.whl")
    return path


def dist_info_file(archive: zipfile.ZipFile, name: str) -> str:
    (member,) = [m for m in archive.namelist() if re.fullmatch(rf"[^/]+\.dist-info/{name}", m)]
    return archive.read(member).decode()


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared(wheel_path: Path) -> tuple[set[str], set[str]]:
    """(core requirement names, names only in extras) from the wheel's METADATA."""
    with zipfile.ZipFile(wheel_path) as archive:
        metadata = email.message_from_string(dist_info_file(archive, "METADATA"))
    core, extras = set(), set()
    for requirement in metadata.get_all("Requires-Dist") or []:
        (extras if "extra ==" in requirement else core).add(requirement_name(requirement))
    return core, extras - core


def test_wheel_holds_only_the_package_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = dist_info_file(archive, "entry_points.txt")

    assert "[console_scripts]\ni2v-adapter = i2v_adapter.cli:main" in entry_points
    packaged = {name for name in names if not re.match(r"[^/]+\.dist-info/", name)}
    assert all(name.startswith(f"{PACKAGE}/") for name in packaged), sorted(packaged)
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / PACKAGE).rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert packaged == sources   # every module of every subpackage, and nothing from scripts/, tests/, install.py


def test_wheel_declares_the_core_and_pipeline_dependencies(wheel):
    core, extras = declared(wheel)
    assert {"torch", "safetensors", "numpy", "pillow", "opencv-python-headless", "imageio-ffmpeg"} <= core
    assert {"diffusers", "transformers", "huggingface-hub"} <= extras


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules a file imports, leaving out the standard library and imports guarded by try/except."""
    tree = ast.parse(path.read_text())
    guarded = {id(node) for handler in ast.walk(tree) if isinstance(handler, ast.Try)
               for statement in handler.body for node in ast.walk(statement)}
    modules = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {module for module in modules if module not in sys.stdlib_module_names and module != PACKAGE}


def test_every_import_of_the_package_is_declared(wheel):
    core, extras = declared(wheel)
    distributions = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        relative = path.relative_to(ROOT / PACKAGE).as_posix()
        if relative.startswith("webui/"):
            continue   # runs inside a WebUI, which brings gradio, fastapi and its own modules
        allowed = core | extras if relative.startswith(_EXTRA_USERS) else core
        for module in _third_party_imports(path):
            names = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
            if not names & allowed:
                undeclared.append(f"{relative}: {module}")
    assert not undeclared, "declare these in pyproject.toml: " + ", ".join(undeclared)


def test_installed_command_runs_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    # The environment's packages (torch...) stay visible; the checkout does not.
    env = {**os.environ, "PYTHONPATH": str(target)}

    result = subprocess.run([str(target / "bin" / "i2v-adapter"), "generate", "--help"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    where = subprocess.run([sys.executable, "-c", "import i2v_adapter; print(i2v_adapter.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: i2v-adapter generate")
    assert "standard files come from the Hugging Face cache" in " ".join(result.stdout.split())
    assert Path(where.stdout.strip()).is_relative_to(target)
