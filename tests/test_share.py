"""``swiftformer share``: a run as a folder timm loads unchanged, a model card beside it, and ``--push``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import timm.data
import torch

import swiftformer
from swiftformer.checkpoint import atomic_torch_save
from swiftformer.cli import main
from swiftformer.recipes import TrainConfig, load_recipe

from .conftest import randomize, user_error

CLASSES = ["airplane", "cat", "ship"]


def fake_run(folder: Path, attention: str = "additive") -> Path:
    """A run directory as training leaves it (best.pth from epoch 2 of 3, log.jsonl), with random weights that make
    every branch count; run from a private path, which the shared card must not show."""
    model = randomize(swiftformer.create_model("swiftformer_xs", num_classes=3, attention=attention), seed=7)
    config = TrainConfig(model="swiftformer_xs", attention=attention, num_classes=3, img_size=64, crop_pct=0.9,
                         interpolation="bilinear", epochs=3, data="/home/someone/private/photos",
                         output_dir=str(folder)).to_dict()
    folder.mkdir(parents=True)
    atomic_torch_save({"model": model.state_dict(), "config": config, "class_names": CLASSES, "epoch": 2},
                      folder / "best.pth")
    records = [{"epoch": epoch, "val_top1": top1, "val_count": 24} for epoch, top1 in ((1, 50.0), (2, 62.5), (3, 58.3))]
    (folder / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def data_config(model: torch.nn.Module) -> dict:
    """timm's reading of the model's preprocessing (sequences as tuples: timm keeps the lists of a config.json)."""
    config = timm.data.resolve_data_config({}, model=model)
    return {key: tuple(value) if isinstance(value, list) else value for key, value in config.items()}


@pytest.fixture
def run(tmp_path) -> Path:
    return fake_run(tmp_path / "runs" / "mine")


def test_the_shared_folder_loads_in_timm_with_our_logits_and_labels(run, tmp_path, capsys):
    out = tmp_path / "shared"
    assert main(["share", str(run), "--output", str(out)]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ours = swiftformer.create_model("swiftformer_xs", pretrained=run / "best.pth").eval()
    assert theirs.pretrained_cfg["label_names"] == CLASSES
    assert data_config(theirs) == data_config(ours) and data_config(theirs)["input_size"] == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (theirs(x) - ours(x)).abs().max() <= 1e-5
    card = (out / "README.md").read_text()
    for text in ("license: apache-2.0", "swiftformer_xs", "62.50 % on 24 val images, epoch 2 of 3", "airplane, cat, ship",
                 "64 x 64, crop 0.9, bilinear", f"swiftformer share {run} --output {out}", "photos (folder)"):
        assert text in card, text
    assert "/home/someone" not in card + (out / "recipe.yaml").read_text()  # no local path of the trainer's
    assert load_recipe(out / "recipe.yaml").img_size == 64  # `swiftformer train --config recipe.yaml` takes it


def test_share_never_overwrites_a_non_empty_folder_without_force(run, tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    user_error(["share", str(run), "--output", str(out)], capsys, "is not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    user_error(["share", str(run), "--output", str(run.parent), "--force"], capsys, "which is shared")  # the run itself
    assert (run / "best.pth").is_file()
    assert main(["share", str(run / "best.pth"), "--output", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "recipe.yaml"]


def test_a_file_saved_from_a_run_shares_what_it_carries(run, tmp_path, capsys):
    """Our own files carry the preprocessing and labels, not the run's log and recipe: the card says so; weights
    that do not name their variant (timm's layout here) take --model."""
    ours = swiftformer.create_model("swiftformer_xs", pretrained=run / "best.pth").eval()
    native = swiftformer.save_checkpoint(ours, tmp_path / "mine.safetensors")
    assert main(["share", str(native), "--output", str(tmp_path / "a")]) == 0
    theirs = timm.create_model(f"local-dir:{tmp_path / 'a'}", pretrained=True).eval()
    assert theirs.pretrained_cfg["label_names"] == CLASSES and data_config(theirs)["input_size"] == (3, 64, 64)
    assert "**Val top-1:** not recorded" in (tmp_path / "a" / "README.md").read_text()
    assert not (tmp_path / "a" / "recipe.yaml").exists()
    plain = swiftformer.save_checkpoint(ours, tmp_path / "timm.pth", format="timm")
    user_error(["share", str(plain), "--output", str(tmp_path / "b")], capsys, "give --model")
    assert main(["share", str(plain), "--output", str(tmp_path / "b"), "--model", "swiftformer_xs"]) == 0
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        shared = timm.create_model(f"local-dir:{tmp_path / 'b'}", pretrained=True).eval()
        assert (shared(x) - ours(x)).abs().max() <= 1e-5


def test_a_model_timm_cannot_build_is_refused_in_one_line(tmp_path, capsys):
    run = fake_run(tmp_path / "mhsa", attention="mhsa")
    user_error(["share", str(run), "--output", str(tmp_path / "out")], capsys, "attention='mhsa'", "timm builds")
    assert not (tmp_path / "out").exists()


def test_push_offline_is_one_line_exit_2_and_keeps_the_folder(run, tmp_path):
    """Offline (HF_HUB_OFFLINE, read when huggingface_hub is imported: a fresh process), no request is tried."""
    out = tmp_path / "shared"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    child = subprocess.run([sys.executable, "-m", "swiftformer", "share", str(run), "--output", str(out),
                            "--push", "someone/swiftformer-xs-photos"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert child.returncode == 2, child.stderr
    err = child.stderr.strip()
    assert len(err.splitlines()) == 1 and "not reachable" in err and "is kept" in err, err
    assert "hf-hub:someone/swiftformer-xs-photos" in (out / "README.md").read_text()
    assert timm.create_model(f"local-dir:{out}", pretrained=True).pretrained_cfg["label_names"] == CLASSES
