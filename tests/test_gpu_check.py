"""``scripts/gpu_check.sh``, the GPU paths no CI machine runs: it parses, every command it runs is one the CLI
takes, and without a GPU it says that nothing was checked (it is never run here as if a GPU had run it)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swiftformer.cli import build_parser

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")


def _run(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_every_command_of_the_script_is_one_the_cli_takes():
    done = _run(GPU_CHECK_DRY_RUN="1")
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines()]
    steps = []
    for argv in commands:
        argv = argv[argv.index("swiftformer") + 1:]  # after "python -m" or "torchrun ... -m"
        args = build_parser().parse_args(argv)  # an unknown flag or value raises
        steps.append((args.command, getattr(args, "amp", None)))
    assert [c for c, _ in steps] == ["train"] * 5 + ["eval", "export", "bench"]
    assert {"bf16", "fp16"} <= {amp for _, amp in steps}
    assert any("torch.distributed.run" in argv for argv in commands)
    assert any("--compile" in argv for argv in commands) and any("--channels-last" in argv for argv in commands)


def test_without_a_gpu_it_says_nothing_was_checked():
    done = _run(CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0 and done.stdout.strip() == (
        "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing checked"), done
