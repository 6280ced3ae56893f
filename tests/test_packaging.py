"""Installing the project: the Makefile's choice of PyTorch build, and a build without deprecation warnings."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _dry_run(*variables: str) -> list[str]:
    """The commands ``make install`` would run (``-B``: whatever the state of .venv)."""
    if shutil.which("make") is None:
        pytest.skip("no make here")
    done = subprocess.run(["make", "-n", "-B", "install", *variables], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return done.stdout.splitlines()


def test_make_installs_torch_from_the_index_named_with_progress_shown():
    """On a CPU-only Linux box PyPI's torch is the CUDA build (a 7.3 GB .venv, 3 minutes with no output)."""
    default = [line for line in _dry_run() if "pip install" in line and "torch==" in line]
    assert len(default) == 2 and not any("index-url" in line for line in default)
    assert "--quiet" not in default[0] and "--progress-bar on" in default[0]  # the big download shows its progress
    assert any(f"TORCH_INDEX={CPU_INDEX}" in line and "7 GB" in line for line in _dry_run())  # says how to choose
    cpu = [line for line in _dry_run(f"TORCH_INDEX={CPU_INDEX}") if "pip install" in line and "torch==" in line]
    assert f"--index-url {CPU_INDEX}" in cpu[0] and f"--extra-index-url {CPU_INDEX}" in cpu[1]


def test_the_package_metadata_builds_without_deprecation_warnings(tmp_path):
    """setuptools warned (a 12-line box, twice per install) about the TOML-table form of ``project.license``."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("setuptools before 77 does not read the SPDX license string (pyproject requires >=77)")
    source = tmp_path / "source"  # a copy: the build writes its egg-info beside pyproject.toml
    shutil.copytree(ROOT / "swiftformer", source / "swiftformer", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                           "build_meta.prepare_metadata_for_build_wheel(sys.argv[1])", str(tmp_path)],
                          cwd=source, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in (done.stdout + done.stderr).lower(), done.stderr
    metadata = next(tmp_path.glob("*.dist-info/METADATA")).read_text()
    assert "License-Expression: Apache-2.0" in metadata
