"""The run directory of both task families (swiftformer/rundir.py), with real processes where it matters.

- A second run into the folder of a run in progress stops in one line (exit 2) and leaves the first's files as
  they were; a killed run holds no lock (the operating system lets go of it), so it resumes.
- A run killed as it writes a checkpoint has no log record past the checkpoint it holds; a resumed run trims
  records its checkpoint does not hold.
- Ctrl-C names the last saved epoch and the command that goes on; ``curves.png`` is drawn after every checkpoint.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import swiftformer.dense.engine
import swiftformer.train
from swiftformer.checkpoint import safe_torch_load
from swiftformer.cli import main
from swiftformer.runlog import read_log

from . import fault_injection
from .test_reliability_training import CHILD_ENV, RUN

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def segmentation_folder(root: Path) -> Path:
    """Four training and two validation 40-px photos of a bright square (label 1) on a dark ground (label 0), in
    the ADE20K layout."""
    generator = np.random.default_rng(0)
    for split, count in (("training", 4), ("validation", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for index in range(count):
            label = np.zeros((40, 40), np.uint8)
            top, left = generator.integers(0, 20, 2)
            label[top:top + 20, left:left + 20] = 1
            image = (label[..., None] * 180 + generator.integers(0, 60, (40, 40, 3))).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{index}.jpg")
            Image.fromarray(label).save(root / "annotations" / split / f"{index}.png")
    return root


def segment_train(data: Path, run: Path, iterations: int) -> list[str]:
    """``segment train`` of a few 32-px iterations, a checkpoint every two."""
    settings = {"iterations": iterations, "eval_interval": 2, "log_interval": 1, "warmup_iters": 1, "img_size": 40,
                "crop_size": 32, "batch_size": 2, "workers": 0}
    return ["segment", "train", "--config", "pennfudan_semantic_fpn_xs", "--data", str(data), "--output-dir", str(run),
            *[f"--set={key}={value}" for key, value in settings.items()]]


def stalled_at_save(argv: list[str], marker: Path, save: int) -> subprocess.Popen:
    """A ``swiftformer`` process that stops (sleeps) as it starts writing its ``save``-th ``last.pth``."""
    child = subprocess.Popen(fault_injection.save_command("stall", marker, save, argv), env=CHILD_ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert child.poll() is None, child.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached its checkpoint"
        time.sleep(0.1)
    return child


def refused_in_one_line(argv: list[str]) -> str:
    """Run ``swiftformer ARGV`` as another process: exit code 2 and one line on stderr, returned."""
    second = subprocess.run([sys.executable, "-m", "swiftformer", *argv], env=CHILD_ENV, capture_output=True,
                            text=True, timeout=240)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr[-3000:]
    return lines[0]


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL


def test_a_second_train_into_a_running_runs_folder_is_refused_and_the_first_resumes_after_a_kill(tmp_path):
    run = tmp_path / "run"
    first = stalled_at_save([*RUN, "--epochs", "2", "--output-dir", str(run)], tmp_path / "saving", save=2)
    try:
        before = contents(run)
        assert {"config.yaml", "last.pth", "log.jsonl"} <= set(before)  # epoch 1 saved, epoch 2 being saved
        line = refused_in_one_line([*RUN, "--epochs", "1", "--output-dir", str(run), "--overwrite"])
        assert line == f"swiftformer train: error: {run} is in use by another run (process {first.pid}): wait for " \
                       "it to end, or give another --output-dir", line
        assert contents(run) == before  # --overwrite did not reach the running run's files
    finally:
        kill(first)
    assert main(["train", "--resume", str(run / "last.pth")]) == 0  # SIGKILL left no lock behind
    assert [record["epoch"] for record in read_log(run / "log.jsonl")] == [1, 2]
    assert not (run / ".lock").exists()


@pytest.fixture
def segmentation_data(tmp_path) -> Path:
    return segmentation_folder(tmp_path / "squares")


def test_a_second_segment_train_is_refused_and_a_kill_at_a_checkpoint_leaves_no_log_past_it(segmentation_data, tmp_path):
    run = tmp_path / "run"
    # stopped as it writes its second checkpoint (iteration 4): records of iterations 3-4 are measured, not saved
    first = stalled_at_save(segment_train(segmentation_data, run, 6), tmp_path / "saving", save=2)
    try:
        before = contents(run)
        line = refused_in_one_line(segment_train(segmentation_data, run, 2))
        assert line.startswith(f"swiftformer segment: error: {run} is in use by another run"), line
        assert contents(run) == before
    finally:
        kill(first)
    saved = safe_torch_load(run / "last.pth")["step"]
    assert saved == 2 and max(record["iteration"] for record in read_log(run / "log.jsonl")) == saved

    with open(run / "log.jsonl", "a") as handle:  # as versions before the run directory wrote it
        handle.write(json.dumps({"iteration": 3, "epoch": 1, "train_loss": 9.0}) + "\n")
    assert main([*segment_train(segmentation_data, run, 4), "--resume", str(run / "last.pth")]) == 0
    records = read_log(run / "log.jsonl")
    assert [record["iteration"] for record in records if "train_loss" in record] == [1, 2, 3, 4]
    assert all(record.get("train_loss") != 9.0 for record in records)  # the unsaved record is gone
    assert (run / "curves.png").is_file()


def test_ctrl_c_names_the_saved_epoch_and_the_resume_command(monkeypatch, tmp_path, capsys):
    real_train_one_epoch = swiftformer.train.train_one_epoch

    def interrupted_in_epoch_2(model, criterion, loader, optimizer, scheduler, scaler, device, epoch, *rest, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_train_one_epoch(model, criterion, loader, optimizer, scheduler, scaler, device, epoch, *rest, **kwargs)

    monkeypatch.setattr(swiftformer.train, "train_one_epoch", interrupted_in_epoch_2)
    run = tmp_path / "run"
    assert main([*RUN, "--epochs", "3", "--output-dir", str(run)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"swiftformer train: interrupted; epoch 1 is saved in {run / 'last.pth'}, go on with: "
        f"swiftformer train --resume {run / 'last.pth'}")
    assert (run / "curves.png").is_file() and not (run / ".lock").exists()


def test_ctrl_c_of_a_segment_run_gives_the_command_that_goes_on(monkeypatch, segmentation_data, tmp_path, capsys):
    real_evaluate = swiftformer.dense.engine.evaluate
    calls = []

    def interrupted_at_the_second_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(swiftformer.dense.engine, "evaluate", interrupted_at_the_second_evaluation)
    run = tmp_path / "run"
    assert main(segment_train(segmentation_data, run, 4)) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"swiftformer segment: interrupted; iteration 2 is saved in {run / 'last.pth'}, go on with: "
        f"swiftformer segment train --config {run / 'config.yaml'} --resume {run / 'last.pth'}")
    monkeypatch.setattr(swiftformer.dense.engine, "evaluate", real_evaluate)
    assert main(["segment", "train", "--config", str(run / "config.yaml"), "--resume", str(run / "last.pth")]) == 0
    assert safe_torch_load(run / "last.pth")["step"] == 4


def test_curves_count_whole_epochs_and_draw_the_dense_metrics():
    import matplotlib

    matplotlib.use("Agg")
    from swiftformer.runlog import curves_figure

    classification = curves_figure([{"epoch": e, "train_loss": 2.0 / e, "val_top1": 10.0 * e} for e in (1, 2, 3)])
    dense = curves_figure([{"iteration": 2, "train_loss": 1.0}, {"iteration": 2, "mIoU": 40.0},
                           {"event": "resume", "iteration": 2}, {"iteration": 4, "train_loss": 0.5}])
    for figure, step in ((classification, "epoch"), (dense, "iteration")):
        for axis in figure.axes:
            assert axis.get_xlabel() == step
            assert all(float(tick).is_integer() for tick in axis.get_xticks()), axis.get_xticks()
    assert [line.get_label() for line in dense.axes[1].lines] == ["mIoU"]


@pytest.fixture
def small_disk(tmp_path):
    """A 70 MB file system (tmpfs, mounted as root): one checkpoint of the digits run (49 MB) fits, two do not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=70m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_stops_in_one_line_keeping_the_saved_epoch(small_disk, capsys):
    run = small_disk / "run"
    assert main([*RUN, "--epochs", "2", "--output-dir", str(run)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"swiftformer train: error: cannot write {run / 'last.pth'}: No space left on device; the previous last.pth "
        "is intact (free some space, then run again)")
    assert safe_torch_load(run / "last.pth")["epoch"] == 1 and safe_torch_load(run / "best.pth")["epoch"] == 1
    assert [record["epoch"] for record in read_log(run / "log.jsonl")] == [1]
    assert sorted(path.name for path in run.iterdir()) == ["best.pth", "config.yaml", "curves.png", "last.pth",
                                                           "log.jsonl"]  # no partial file, no lock


def test_batch_size_1_is_refused_before_the_run_directory_exists(tmp_path, capsys):
    from .conftest import user_error

    run = tmp_path / "run"
    user_error([*RUN, "--batch-size", "1", "--output-dir", str(run)], capsys,
               "--batch-size 1: BatchNorm needs more than one image per process to train")
    assert not run.exists()


def test_a_run_that_fails_its_checks_leaves_no_folder_behind(tmp_path, capsys):
    from .conftest import user_error

    run = tmp_path / "run"
    user_error([*RUN, "--num-classes", "3", "--output-dir", str(run)], capsys, "--num-classes 3 does not match")
    assert not run.exists()


def test_a_dense_run_reads_its_loss_once_per_log_interval(monkeypatch, segmentation_data, tmp_path):
    """``Tensor.item()`` waits for the device: the loop sums the loss on it and reads it per log record."""
    import torch

    from swiftformer.dense.config import load_config

    reads = []
    real_item = torch.Tensor.item

    def item(tensor):
        caller = sys._getframe(1).f_code
        if caller.co_filename == swiftformer.dense.engine.__file__:
            reads.append(caller.co_name)
        return real_item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", item)
    monkeypatch.setattr(swiftformer.dense.engine, "evaluate", lambda *args, **kwargs: {"mIoU": 50.0})
    config = load_config("pennfudan_semantic_fpn_xs", {
        "data": str(segmentation_data), "output_dir": str(tmp_path / "run"), "iterations": 6, "eval_interval": 6,
        "log_interval": 3, "warmup_iters": 1, "img_size": 40, "crop_size": 32, "batch_size": 2, "workers": 0})
    swiftformer.dense.engine.train(config)
    assert sorted(reads) == ["<dictcomp>", "<dictcomp>", "checked_mean", "checked_mean"], reads  # iterations 3, 6
