"""Crashes and divergence during training.

- A training process killed with SIGKILL in the middle of an epoch, then ``--resume``d, ends with exactly the
  weights of a run that was never interrupted: ``last.pth`` holds everything the next epoch consumes (weights,
  EMA, optimizer, schedule, every RNG), so the interrupted epoch is replayed from its start, bit for bit.
- A NaN/Inf loss stops the run naming the update and the last good checkpoint; a checkpoint holding NaN/Inf
  is never written.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import swiftformer.train
from swiftformer.checkpoint import safe_torch_load
from swiftformer.cli import main

from . import fault_injection

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# 24 digits, batch 8: 3 updates per epoch; EMA on, so its state must survive the crash as well.
RUN = ["train", "--config", "demo_digits", "--dataset", "digits", "--img-size", "32", "--batch-size", "8",
       "--workers", "0", "--no-progress", "--device", "cpu", "--seed", "3",
       "--set", "train_subset=24", "--set", "val_subset=8", "--set", "warmup_epochs=1"]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _swiftformer(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swiftformer", *args], env=CHILD_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 240) -> None:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = _swiftformer([*RUN, "--epochs", "2", "--output-dir", str(tmp_path / "reference")])
    run, signal_file = tmp_path / "crashed", tmp_path / "mid-epoch"
    # The child reports when it is inside epoch 2 (after its second batch) and waits there, to be killed mid-epoch.
    argv = fault_injection.command("stall", signal_file, 1, 2, [*RUN, "--epochs", "2", "--output-dir", str(run)])
    child = subprocess.Popen(argv, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not signal_file.exists():
        assert child.poll() is None, child.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "the training child never reached epoch 2"
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert safe_torch_load(run / "last.pth")["epoch"] == 1  # epoch 2 was lost mid-way

    assert main(["train", "--resume", str(run / "last.pth")]) == 0  # the run's config comes from the checkpoint
    _finish(reference)

    resumed, uninterrupted = safe_torch_load(run / "last.pth"), safe_torch_load(tmp_path / "reference" / "last.pth")
    assert resumed["epoch"] == uninterrupted["epoch"] == 2 and resumed["step"] == uninterrupted["step"] == 6
    for key in ("model", "ema"):
        for name, tensor in uninterrupted[key].items():
            torch.testing.assert_close(resumed[key][name], tensor, rtol=0, atol=1e-6, msg=f"{key}.{name}")
    for state in ("exp_avg", "exp_avg_sq"):
        for index, values in uninterrupted["optimizer"]["state"].items():
            torch.testing.assert_close(resumed["optimizer"]["state"][index][state], values[state], rtol=0, atol=1e-6)
    epochs = [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # each epoch logged once: the replayed epoch replaces the lost one


def _inject(monkeypatch: pytest.MonkeyPatch, epoch_index: int, batch_index: int | None = None, after=None) -> None:
    """Wrap ``train_one_epoch``: NaN pixels in one batch of one epoch, or ``after(model)`` once that epoch ends."""
    real = swiftformer.train.train_one_epoch

    def nan_batches(loader):
        for index, (images, targets) in enumerate(loader):
            yield (torch.full_like(images, float("nan")) if index == batch_index else images), targets

    class Loader:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            return nan_batches(self.loader)

    def train_one_epoch(model, criterion, loader, *args, **kwargs):
        epoch = args[4]
        if epoch == epoch_index and batch_index is not None:
            loader = Loader(loader)
        result = real(model, criterion, loader, *args, **kwargs)
        if epoch == epoch_index and after is not None:
            after(model)
        return result

    monkeypatch.setattr(swiftformer.train, "train_one_epoch", train_one_epoch)


def _assert_epoch_one_kept(run: Path) -> None:
    for name in ("last.pth", "best.pth"):
        checkpoint = safe_torch_load(run / name)
        assert checkpoint["epoch"] == 1 and not swiftformer.train.nonfinite_entries(checkpoint)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_nan_loss_stops_naming_the_update_and_the_last_good_checkpoint(monkeypatch, tmp_path, capsys):
    _inject(monkeypatch, epoch_index=1, batch_index=1)  # epoch 2, its second batch: update 3 + 2 = 5
    run = tmp_path / "run"
    assert main([*RUN, "--epochs", "2", "--output-dir", str(run), "--set", "ema_decay=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "NaN or infinite at update 5 (epoch 2)" in err and f"last good checkpoint is {run / 'last.pth'}" in err, err
    _assert_epoch_one_kept(run)


def test_a_nan_loss_before_any_checkpoint_says_so(monkeypatch, tmp_path, capsys):
    _inject(monkeypatch, epoch_index=0, batch_index=0)
    run = tmp_path / "run"
    assert main([*RUN, "--epochs", "1", "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "at update 1 (epoch 1)" in err and "no checkpoint was written yet" in err, err
    assert not (run / "last.pth").exists()


def test_weights_holding_nan_are_never_saved(monkeypatch, tmp_path, capsys):
    """The loss of the last update can be finite while that update wrote NaN into the weights."""

    def poison(model):
        with torch.no_grad():
            model.head.weight[0, 0] = float("inf")

    _inject(monkeypatch, epoch_index=1, after=poison)
    run = tmp_path / "run"
    assert main([*RUN, "--epochs", "2", "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "model.head.weight" in err and "after epoch 2 (update 6); not saved" in err, err
    assert f"last good checkpoint is {run / 'last.pth'}" in err, err
    _assert_epoch_one_kept(run)
