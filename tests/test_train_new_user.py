"""What a new user meets in ``train`` off the happy path (issue 38): each mistake refused in one line before any
work, or the run doing what was asked and saying it the way the summary does."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swiftformer.cli import main
from swiftformer.runlog import RunLog

from .conftest import user_error
from .test_reliability_training import RUN
from .test_train_own_data import photo_folder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One epoch on 24 digits at 32 px (the demo_digits recipe says 64)."""
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main([*RUN, "--epochs", "1", "--output-dir", str(run)]) == 0
    return run


def test_one_class_is_refused(tmp_path, capsys):
    photos = photo_folder(tmp_path / "single", {"cat": "cat"})
    user_error(["train", "--config", "cifar10_mini", "--data", str(photos), "--output-dir", str(tmp_path / "run")],
               capsys, f"{photos} has one class (cat): a classifier learns to tell classes apart")
    assert not (tmp_path / "run").exists()


def test_qat_takes_the_image_size_of_the_run_it_refines(digits_run, tmp_path):
    qat_run = tmp_path / "qat"
    argv = ["train", "--config", "demo_digits", "--dataset", "digits", "--qat", "--finetune", str(digits_run / "last.pth"),
            "--epochs", "1", "--lr", "1e-5", "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu",
            "--set", "train_subset=24", "--set", "val_subset=8", "--output-dir", str(qat_run)]
    assert main(argv) == 0
    assert yaml.safe_load((qat_run / "config.yaml").read_text())["img_size"] == 32  # the run's, not the recipe's 64


def test_a_teacher_asked_for_that_cannot_distil_these_classes_is_refused(tmp_path, capsys):
    user_error([*RUN, "--distillation", "hard", "--teacher", "resnet18", "--output-dir", str(tmp_path / "run")], capsys,
               "--distillation hard --teacher resnet18: the teacher's released weights predict 1000 classes, the data "
               "has 10", "--teacher-checkpoint")


def test_resume_with_another_model_names_the_runs_model(digits_run, capsys):
    user_error(["train", "--resume", str(digits_run / "last.pth"), "--model", "swiftformer_s"], capsys,
               "model 'swiftformer_s' (the run's: 'swiftformer_xs')")


def test_the_training_bar_counts_epochs_from_1(monkeypatch, tmp_path):
    descriptions = []
    real_progress = RunLog.progress

    def remembered(self, iterable, total, description):
        descriptions.append(description)
        return real_progress(self, iterable, total, description)

    monkeypatch.setattr(RunLog, "progress", remembered)
    assert main([*RUN, "--epochs", "1", "--output-dir", str(tmp_path / "run")]) == 0
    assert descriptions[0] == "epoch 1", descriptions


def test_a_tiny_loss_is_printed_as_a_number():
    from swiftformer.train import _summary

    record = {"train_loss": 2.5e-6, "lr": 1e-5, "images_per_second": 10.0}
    assert _summary(record).startswith("loss 2.5e-06  ")
    assert _summary({**record, "train_loss": 1.23456}).startswith("loss 1.2346  ")
