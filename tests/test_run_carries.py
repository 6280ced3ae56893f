"""The library carries a run: a model loaded from one of our runs, or from a file saved from it, preprocesses and
names its classes as ``swiftformer eval`` does; ``save_checkpoint(model, "x.pth")`` loads back everywhere."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import timm.data
import torch

import swiftformer
from swiftformer.cli import main
from swiftformer.data import eval_transform, load_image, model_data_config
from swiftformer.data_config import resolve_data_config
from swiftformer.inference import load_model, run_config

from .conftest import shared_data

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CLASSES = ("airplane", "cat", "ship")
# 64 px, crop 0.9, bilinear: none of them the defaults (224, 0.875, bicubic) a model without its run would take
RUN = ["--config", "cifar10_mini", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress",
       "--device", "cpu", "--img-size", "64", "--set", "crop_pct=0.9", "--set", "interpolation=bilinear"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """One epoch on 8 CIFAR-10 photographs of each of three classes, 8 more of each to evaluate (links, not copies)."""
    source, root = shared_data("cifar10-mini"), tmp_path_factory.mktemp("carried")
    for split in ("train", "val"):
        for name in CLASSES:
            (root / "photos" / split / name).mkdir(parents=True)
            for image in sorted((source / split / name).iterdir())[:8]:
                (root / "photos" / split / name / image.name).symlink_to(image)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *RUN, "--data", str(root / "photos"), "--output-dir", str(root / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"checkpoint": root / "run" / "best.pth", "data": root / "photos", "val": root / "photos" / "val"}


def val_images(run: dict[str, Path]) -> list[tuple[Path, int]]:
    return [(path, label) for label, name in enumerate(CLASSES) for path in sorted((run["val"] / name).iterdir())]


def eval_top1(checkpoint: Path, data: Path, capsys: pytest.CaptureFixture) -> float:
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--workers", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"]


@torch.no_grad()
def library_top1(model: torch.nn.Module, run: dict[str, Path]) -> float:
    """The README's library snippet: the model's own data config, timm's transform, argmax."""
    transform = timm.data.create_transform(**resolve_data_config(model))
    images = val_images(run)
    hits = sum(int(model.eval()(transform(load_image(path))[None]).argmax()) == label for path, label in images)
    return 100.0 * hits / len(images)


def test_a_model_loaded_from_a_run_preprocesses_and_names_classes_as_eval_does(run, capsys):
    model = swiftformer.create_model("swiftformer_xs", pretrained=run["checkpoint"])
    assert model.pretrained_cfg["label_names"] == list(CLASSES)
    config = resolve_data_config(model)
    assert (config["input_size"], config["crop_pct"], config["interpolation"]) == ((3, 64, 64), 0.9, "bilinear")
    assert timm.data.resolve_data_config({}, model=model) == config  # timm's own reading of the model
    assert resolve_data_config(swiftformer.reparameterize(model)) == config  # the fused copy keeps it
    loaded = load_model(str(run["checkpoint"]))
    assert loaded.model.pretrained_cfg["label_names"] == list(CLASSES)
    assert model_data_config(loaded.model, run_config(loaded)) == config  # eval's transform is the library's
    assert library_top1(model, run) == eval_top1(run["checkpoint"], run["data"], capsys)


@pytest.mark.parametrize("name", ["x.pth", "x.pt", "x.bin", "x.safetensors"])
def test_a_file_saved_from_a_run_model_carries_the_run(run, tmp_path, capsys, name):
    model = swiftformer.create_model("swiftformer_xs", pretrained=run["checkpoint"]).eval()
    path = swiftformer.save_checkpoint(model, tmp_path / name)
    if path.suffix != ".safetensors":  # a plain dict: no pickled code, timm's state_dict entry
        assert set(torch.load(path, weights_only=True)) == {"state_dict", "metadata"}
    again = swiftformer.create_model("swiftformer_xs", pretrained=path)
    assert again.pretrained_cfg == model.pretrained_cfg
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model(x), rtol=0, atol=0)
    # the command line reads it without --model, at the run's size, crop and interpolation, with its class names
    assert eval_top1(path, run["data"], capsys) == eval_top1(run["checkpoint"], run["data"], capsys)
    photo = val_images(run)[0][0]
    assert main(["predict", str(photo), "--checkpoint", str(path), "--json", "--topk", "3"]) == 0
    top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"]
    assert sorted(entry["class"] for entry in top) == sorted(CLASSES)
    loaded = load_model(str(run["checkpoint"]))
    with torch.no_grad():
        expected = model(eval_transform(loaded.model, run_config(loaded))(load_image(photo))[None]).softmax(1)[0]
    assert top[0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_timm_reads_a_pth_saved_by_name(run, tmp_path):
    """``save_checkpoint(model, "x.pth")``: timm's factory (a file as pretrained weights) and its load_checkpoint."""
    model = swiftformer.create_model("swiftformer_xs", pretrained=run["checkpoint"]).eval()
    path = swiftformer.save_checkpoint(model, tmp_path / "x.pth")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    theirs = timm.create_model("swiftformer_xs", pretrained=True, num_classes=len(CLASSES),
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=len(CLASSES))).eval()
    other = timm.create_model("swiftformer_xs", num_classes=len(CLASSES)).eval()
    timm.models.load_checkpoint(other, str(path))
    with torch.no_grad():
        ours = model(x)
        assert (theirs(x) - ours).abs().max() <= 1e-5 and (other(x) - ours).abs().max() <= 1e-5
    assert os.path.getsize(path) > 0
