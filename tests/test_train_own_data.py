"""A first hour on one's own data: train, resume, evaluate a three-class folder of photographs.

Each test is a mistake a new user makes (other class folders, a wrong ``--num-classes``, a copied run, a second
run into the same folder, a full disk, a deleted ``--finetune`` file, the ImageNet recipe offline): the tool must
refuse it in one line before any work, or do the right thing and say what it did.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import swiftformer
import swiftformer.rundir
import swiftformer.train
from swiftformer.checkpoint import safe_torch_load
from swiftformer.cli import main

from .conftest import shared_data, user_error

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CLASSES = ("airplane", "cat", "dog")
# 8 photographs per class and batch 8: 3 updates per epoch; 4 per class to evaluate
TINY = ["--config", "cifar10_mini", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress",
        "--device", "cpu"]


def photo_folder(root: Path, classes: dict[str, str], train: int = 8, val: int = 4) -> Path:
    """An ImageFolder (root/train/<name>, root/val/<name>) of CIFAR-10 photographs, linked not copied;
    ``classes`` maps each folder name to the CIFAR-10 class whose photographs it holds."""
    source = shared_data("cifar10-mini")
    for split, count in (("train", train), ("val", val)):
        for name, cifar_class in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for image in sorted((source / split / cifar_class).iterdir())[:count]:
                (folder / image.name).symlink_to(image)
    return root


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder holding ``photos`` (three classes) and ``run``: one epoch trained there with relative paths."""
    base = tmp_path_factory.mktemp("own")
    photo_folder(base / "photos", {name: name for name in CLASSES})
    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(base)
    torch.set_num_threads(1)
    try:
        assert main(["train", *TINY, "--data", "photos", "--output-dir", "run"]) == 0
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return base


def _copy_run(base: Path, target: Path) -> Path:
    shutil.copytree(base / "run", target)
    return target


# 3 ---------------------------------------------------------------------------------------------------------
def test_eval_on_other_class_names_is_refused_naming_them(base, tmp_path, monkeypatch, capsys):
    other = photo_folder(tmp_path / "other", {"airplane": "airplane", "cat": "cat", "wolf": "dog"})

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before checking the class names")

    monkeypatch.setattr("swiftformer.engine.evaluate", no_evaluation)
    user_error(["eval", "--checkpoint", str(base / "run" / "last.pth"), "--data", str(other), "--workers", "0"],
                capsys, "1 class(es) that", "does not predict: wolf")


def _eval_json(checkpoint: Path, data: Path, capsys) -> dict:
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--workers", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_on_some_of_the_model_classes_scores_each_photo_as_the_model_names_it(base, tmp_path, capsys):
    """A folder holding two of the model's three classes: its labels are the model's indices of those names (not
    0 and 1), every prediction picks among all three classes, and the report says so."""
    checkpoint = base / "run" / "last.pth"
    full = _eval_json(checkpoint, base / "photos", capsys)
    some = photo_folder(tmp_path / "some", {"dog": "dog", "airplane": "airplane"})
    part = _eval_json(checkpoint, some, capsys)
    assert part["class_names"] == list(CLASSES) and part["class_total"] == [4, 0, 4]
    assert part["class_correct"][0::2] == full["class_correct"][0::2]
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(some), "--workers", "0"]) == 0
    table, summary = capsys.readouterr().out.split("images:")
    assert "cat" not in table and "dog" in table and "holds 2 of the model's 3 classes" in summary


def test_resume_on_other_class_names_is_refused_and_keeps_the_stored_names(base, tmp_path, capsys):
    run = _copy_run(base, tmp_path / "run")
    other = photo_folder(tmp_path / "other", {"airplane": "airplane", "cat": "cat", "wolf": "dog"})
    user_error(["train", "--resume", str(run / "last.pth"), "--data", str(other), "--epochs", "2"], capsys,
                ": dog", ": wolf")
    more = photo_folder(tmp_path / "more", {name: name for name in (*CLASSES, "ship")})
    user_error(["train", "--resume", str(run / "last.pth"), "--data", str(more), "--epochs", "2"], capsys,
                "trained on 3 classes", "has 4")
    # what the restored optimizer, schedule and data stream fix cannot change silently (it was written into the
    # config and not used)
    user_error(["train", "--resume", str(run / "last.pth"), "--lr", "0.1", "--batch-size", "4"], capsys,
                "continues the run as it was configured", "batch_size 4 (the run's: 8)", "lr 0.1 (the run's: ", "--finetune")
    checkpoint = safe_torch_load(run / "last.pth")
    assert checkpoint["epoch"] == 1 and checkpoint["class_names"] == list(CLASSES)
    assert _epochs(run) == [1]


# 4 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", ["2", "5"])
def test_num_classes_must_match_the_data(base, tmp_path, count, capsys):
    user_error(["train", *TINY, "--data", str(base / "photos"), "--num-classes", count,
                 "--output-dir", str(tmp_path / "run")], capsys, f"--num-classes {count}", "has 3 classes")
    assert not (tmp_path / "run").exists()  # refused before any work


# 5 and the second half of 15 -------------------------------------------------------------------------------
def test_a_copied_run_resumes_beside_its_copy_and_evaluates_from_anywhere(base, tmp_path, monkeypatch, capsys, caplog):
    config = yaml.safe_load((base / "run" / "config.yaml").read_text())
    assert config["output_dir"] == str(base / "run") and config["data"] == str(base / "photos")  # stored absolute
    assert safe_torch_load(base / "run" / "last.pth")["config"]["data"] == str(base / "photos")

    copy = _copy_run(base, tmp_path / "copy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    caplog.set_level("INFO")
    assert main(["train", "--resume", str(copy / "last.pth"), "--epochs", "2"]) == 0
    assert f"run directory: {copy}" in caplog.messages
    assert safe_torch_load(copy / "last.pth")["epoch"] == 2 and _epochs(copy) == [1, 2]
    assert safe_torch_load(base / "run" / "last.pth")["epoch"] == 1 and _epochs(base / "run") == [1]
    assert yaml.safe_load((copy / "config.yaml").read_text())["output_dir"] == str(copy)

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(base / "run" / "last.pth"), "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 12 and result["class_names"] == list(CLASSES)


# 6 ---------------------------------------------------------------------------------------------------------
def test_a_new_run_into_a_run_is_refused_unless_overwrite(base, tmp_path, capsys):
    run = _copy_run(base, tmp_path / "run")
    before = (run / "last.pth").read_bytes()
    user_error(["train", *TINY, "--data", str(base / "photos"), "--output-dir", str(run)], capsys,
                f"{run} already holds a run", "--resume", "--overwrite")
    other = _copy_run(base, tmp_path / "other")  # resuming another run into this one's folder is no exception
    user_error(["train", "--resume", str(other / "last.pth"), "--output-dir", str(run), "--epochs", "2"], capsys,
               f"{run} already holds a run")
    assert (run / "last.pth").read_bytes() == before and _epochs(run) == [1]
    assert main(["train", *TINY, "--data", str(base / "photos"), "--output-dir", str(run), "--overwrite"]) == 0
    assert _epochs(run) == [1] and (run / "last.pth").read_bytes() != before
    assert yaml.safe_load((run / "config.yaml").read_text())["overwrite"] is False  # a start from it replaces nothing


# 7 ---------------------------------------------------------------------------------------------------------
def test_the_log_never_claims_an_epoch_the_checkpoint_does_not_hold(base, tmp_path, monkeypatch):
    run = _copy_run(base, tmp_path / "run")
    real_save = swiftformer.rundir.atomic_torch_save

    def disk_full(obj, path):
        if obj["epoch"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path)

    monkeypatch.setattr(swiftformer.rundir, "atomic_torch_save", disk_full)
    resume = ["train", "--resume", str(run / "last.pth"), "--epochs", "2", "--data", str(base / "photos"),
              "--output-dir", str(run)]
    assert main(resume) == 2  # one line naming the full disk (tests/test_user_errors.py), not a traceback
    assert safe_torch_load(run / "last.pth")["epoch"] == 1 and _epochs(run) == [1]

    # a log that claims more (as earlier versions wrote it) loses the records the checkpoint does not hold
    with open(run / "log.jsonl", "a") as handle:
        handle.write(json.dumps({"epoch": 2, "train_loss": 9.0}) + "\n")
    monkeypatch.setattr(swiftformer.rundir, "atomic_torch_save", real_save)
    assert main(resume) == 0
    assert _epochs(run) == [1, 2] and json.loads((run / "log.jsonl").read_text().splitlines()[1])["train_loss"] != 9.0


# 9 ---------------------------------------------------------------------------------------------------------
def test_resuming_a_finetuned_run_needs_no_finetune_file(base, tmp_path):
    weights = swiftformer.save_checkpoint(swiftformer.create_model("swiftformer_xs"), tmp_path / "imagenet.safetensors")
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(base / "photos"), "--finetune", str(weights), "--output-dir", str(run)]) == 0
    weights.unlink()
    assert main(["train", "--resume", str(run / "last.pth"), "--epochs", "2"]) == 0
    assert safe_torch_load(run / "last.pth")["epoch"] == 2


# 13 --------------------------------------------------------------------------------------------------------
def test_the_imagenet_recipe_on_own_data_trains_without_distillation_and_downloads_nothing(base, tmp_path, monkeypatch, caplog):
    def no_download(*args, **kwargs):
        raise AssertionError("a teacher was built or downloaded for data it cannot teach")

    monkeypatch.setattr("timm.create_model", no_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    caplog.set_level("INFO")
    run = tmp_path / "run"
    assert main(["train", "--data", str(base / "photos"), "--model", "swiftformer_xs", "--img-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu", "--output-dir", str(run)]) == 0
    said = [m for m in caplog.messages if "without distillation" in m]
    assert len(said) == 1 and "predicts 1000 classes, the data has 3" in said[0], caplog.messages
    assert yaml.safe_load((run / "config.yaml").read_text())["distillation"] == "none"


def test_released_weights_neither_cached_nor_reachable_fail_at_once(tmp_path, monkeypatch, capsys):
    """eval/predict without a checkpoint: one request finds the Hub unreachable; no download with its retries."""
    def no_download(*args, **kwargs):
        raise AssertionError("asked the Hub client, which retries for ~30 s when the Hub is unreachable")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    for argv in (["eval", "--dataset", "digits", "--workers", "0"], ["predict", str(tmp_path)]):
        user_error(argv, capsys, "timm/swiftformer_xs.dist_in1k", "not reachable", "--checkpoint")
