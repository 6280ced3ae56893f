"""The train, eval and predict commands end to end, and a short real run on CIFAR-10 photographs."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swiftformer.cli import main
from swiftformer.runlog import read_log

pytestmark = pytest.mark.slow

CIFAR10_MINI = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-mini"
TINY = ["--dataset", "digits", "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0",
        "--distillation", "none", "--no-progress", "--set", "train_subset=64", "--set", "warmup_epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """The run directory of a tiny CLI training run, and what the command printed."""
    output_dir = tmp_path_factory.mktemp("cli") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--config", "demo_digits", *TINY, "--output-dir", str(output_dir)]) == 0
    return output_dir, printed.getvalue()


@pytest.fixture(scope="module")
def run_dir(trained) -> Path:
    return trained[0]


def test_train_prints_accuracy_and_writes_the_run(trained):
    run_dir, printed = trained
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "log.jsonl", "last.pth", "best.pth", "curves.png"}
    last = read_log(run_dir / "log.jsonl")[-1]
    assert printed.splitlines()[-1] == (
        f"top-1: {last['val_top1']:.2f}  top-5: {last['val_top5']:.2f}  EMA top-1: {last['ema_top1']:.2f}"
    )


def test_eval_reports_top1_top5_per_class_and_json(run_dir, capsys):
    assert main(["eval", "--checkpoint", str(run_dir / "last.pth"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "images: 360" in out and out.strip().splitlines()[-1].startswith("top-1: ")
    lines = out.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["class", "images", "top-1"])
    rows = [line.split() for line in lines[header + 1 : header + 11]]  # one row per digit class: name, images, top-1
    assert [row[0] for row in rows] == [str(d) for d in range(10)] and sum(int(row[1]) for row in rows) == 360
    assert all(0 <= float(row[2]) <= 100 for row in rows) and lines[header + 11] == "images: 360"
    assert lines[0] == f"model: swiftformer_xs from {run_dir / 'last.pth'}"
    assert main(["eval", "--checkpoint", str(run_dir / "last.pth"), "--ema", "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 360 and sum(result["class_total"]) == 360 and 0 <= result["top1"] <= result["top5"] <= 100
    assert result["class_names"] == [str(d) for d in range(10)]


def test_predict_names_the_dataset_classes(run_dir, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * index, dtype=np.uint8)).save(folder / f"{index}.png")
    assert main(["predict", str(folder), "--checkpoint", str(run_dir / "last.pth"), "--topk", "3", "--json",
                 "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["image"]).name for line in lines] == ["0.png", "1.png", "2.png"]
    for line in lines:
        assert len(line["top"]) == 3 and {t["class"] for t in line["top"]} <= {str(d) for d in range(10)}
        probabilities = [t["probability"] for t in line["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6


def test_user_errors_exit_with_code_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--epochs", "1", "--no-progress"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["train", "--config", "no_such_recipe"]) == 2
    assert main(["predict", str(tmp_path / "missing.jpg"), "--checkpoint", str(tmp_path / "none.pth")]) == 2


def test_short_cifar10_mini_run_beats_chance(tmp_path, capsys):
    if not CIFAR10_MINI.is_dir():
        pytest.skip(f"CIFAR-10 photographs not found at {CIFAR10_MINI} (see ../shared/data/README.md)")
    args = ["train", "--config", "demo_digits", "--dataset", "folder", "--data", str(CIFAR10_MINI), "--img-size", "32",
            "--epochs", "3", "--batch-size", "32", "--output-dir", str(tmp_path / "cifar"), "--no-progress",
            "--set", "crop_pct=1.0", "--set", "hflip=0.5", "--set", "crop_scale=[0.35,1]", "--set", "train_subset=2000",
            "--set", "warmup_epochs=0.5", "--set", "ema_decay=null"]
    assert main(args) == 0
    top1 = float(capsys.readouterr().out.split("top-1:")[1].split()[0])
    assert top1 >= 25.0, f"top-1 {top1} % after the short CIFAR-10 budget (chance: 10 %)"
