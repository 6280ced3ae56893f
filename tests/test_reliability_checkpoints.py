"""Untrusted checkpoints: a crafted pickle is refused by every command that reads weights, and runs nothing.

The pickle's payload would create a marker file when unpickled (what a malicious checkpoint would do with
``os.system``); each command must exit with code 2, say why on one line, and leave no marker behind.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from swiftformer.cli import main

TINY_TRAIN = ["--config", "demo_digits", "--dataset", "digits", "--img-size", "32", "--epochs", "1",
              "--batch-size", "16", "--workers", "0", "--distillation", "none", "--no-progress", "--device", "cpu",
              "--set", "train_subset=32", "--set", "val_subset=16"]


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Path:
    """A training checkpoint of the right shape whose extra entry runs code when unpickled."""
    path = tmp_path / "evil.pth"
    torch.save({"model": {"stem.0.weight": torch.zeros(1)}, "config": {"model": "swiftformer_xs"},
                "epoch": 1, "payload": _CreatesFile(marker)}, path)
    assert not marker.exists()
    return path


def _assert_refused(argv: list[str], marker: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing to load" in err and "evil" in err, err
    assert len(err.splitlines()) == 1, err
    assert not marker.exists(), "unpickling ran the payload"


@pytest.mark.parametrize("command", [
    ["eval", "--dataset", "digits", "--workers", "0", "--checkpoint"],
    ["eval", "--model", "swiftformer_xs", "--dataset", "digits", "--workers", "0", "--checkpoint"],
    ["predict", "IMAGE", "--checkpoint"],
    ["predict", "IMAGE", "--model", "swiftformer_xs", "--checkpoint"],
    ["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--out", "OUT", "--checkpoint"],
    ["train", "--resume"],  # the run config is read from the checkpoint
    ["train", *TINY_TRAIN, "--resume"],  # the recipe is given: the state is read when resuming
    ["train", *TINY_TRAIN, "--finetune"],
    ["train", *TINY_TRAIN, "--distillation", "hard", "--teacher", "swiftformer_xs", "--teacher-checkpoint"],
], ids=["eval", "eval-model", "predict", "predict-model", "export", "resume", "resume-recipe", "finetune", "teacher"])
def test_every_command_refuses_a_malicious_pickle(command, evil, marker, tmp_path, capsys):
    image = tmp_path / "image.png"
    image.write_bytes(b"")  # never read: the checkpoint is refused first
    argv = [str(image) if a == "IMAGE" else str(tmp_path / "out.onnx") if a == "OUT" else a for a in command]
    _assert_refused([*argv, str(evil), "--output-dir", str(tmp_path / "run")] if command[0] == "train"
                    else [*argv, str(evil)], marker, capsys)
    assert not (tmp_path / "out.onnx").exists()


def test_weights_of_any_suffix_and_hf_directories_are_refused(evil, marker, tmp_path, capsys):
    """Non-``.pth`` files and Hugging Face directories take the weights path, which is just as strict."""
    for name in ("evil.bin", "evil.ckpt"):
        path = tmp_path / name
        path.write_bytes(evil.read_bytes())
        _assert_refused(["export", "--io", "tensor", "--model", "swiftformer_xs", "--format", "onnx", "--out",
                         str(tmp_path / "o.onnx"), "--checkpoint", str(path)], marker, capsys)
    hf = tmp_path / "evil_hf"
    hf.mkdir()
    (hf / "pytorch_model.bin").write_bytes(evil.read_bytes())
    _assert_refused(["eval", "--model", "swiftformer_xs", "--dataset", "digits", "--checkpoint", str(hf)], marker, capsys)


def test_a_bare_pickle_is_refused_too(marker, tmp_path, capsys):
    """An old-style pickle file (not a torch zip archive) goes through the same safe unpickler."""
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": {}, "payload": _CreatesFile(marker)}, handle, protocol=2)
    _assert_refused(["train", "--resume", str(path), "--output-dir", str(tmp_path / "run")], marker, capsys)
    _assert_refused(["eval", "--checkpoint", str(path)], marker, capsys)
