"""The dense training engine and CLI on real data: a short Penn-Fudan segmentation run (must beat the
all-background baseline), resume, eval and predict for both tasks, the learning-rate schedules and recipes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from swiftformer.cli import main as cli_main
from swiftformer.dense.config import DenseConfig, config_from_dict, configs_dir, list_configs, load_config
from swiftformer.dense.data import SegmentationFolder
from swiftformer.dense.engine import load_trained, lr_factor, train
from swiftformer.dense.metrics import ConfusionMatrix
from swiftformer.dense.pennfudan import convert_pennfudan
from swiftformer.errors import DataError, SwiftFormerError
from swiftformer.runlog import read_log

from .conftest import shared_data

SEG_ITERATIONS = 60


@pytest.fixture(scope="module")
def pennfudan(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("pennfudan")
    convert_pennfudan(shared_data("pennfudan"), output)
    return output


@pytest.fixture(scope="module")
def segmentation_run(pennfudan, tmp_path_factory) -> tuple[DenseConfig, dict, Path]:
    """The CI version of the README's semantic-FPN run: the shipped recipe, shortened."""
    output = tmp_path_factory.mktemp("seg_run")
    config = load_config("pennfudan_semantic_fpn_xs", {
        "data": str(pennfudan / "ade"), "output_dir": str(output), "iterations": SEG_ITERATIONS,
        "eval_interval": SEG_ITERATIONS, "warmup_iters": 10, "img_size": 160, "crop_size": 160, "workers": 0,
    })
    torch.manual_seed(0)
    return config, train(config), output


def all_background_miou(root: Path) -> float:
    val = SegmentationFolder(root, "validation")
    metric = ConfusionMatrix(2)
    for index in range(len(val)):
        label = val.read_label(index)
        metric.update(torch.zeros_like(label), label)
    return metric.compute()["mIoU"]


@pytest.mark.slow
def test_short_segmentation_run_beats_all_background(segmentation_run, pennfudan) -> None:
    _, metrics, output = segmentation_run
    baseline = all_background_miou(pennfudan / "ade")
    assert 35 < baseline < 50  # person IoU 0, background IoU = background share of the pixels
    assert metrics["mIoU"] > baseline + 10, (metrics, baseline)
    records = read_log(output / "log.jsonl")
    assert records[-1]["iteration"] == SEG_ITERATIONS and "train_loss" in records[0]
    assert {p.name for p in output.iterdir()} >= {"config.yaml", "log.jsonl", "last.pth", "best.pth"}  # classification's
    checkpoint = torch.load(output / "last.pth", weights_only=True)
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "epoch", "step", "config", "class_names", "rng",
            "best_mIoU"} <= set(checkpoint)
    assert checkpoint["step"] == SEG_ITERATIONS and checkpoint["best_mIoU"] == metrics["mIoU"]
    assert load_config(output / "config.yaml") == load_config("pennfudan_semantic_fpn_xs", {  # the saved config loads back
        "data": str(pennfudan / "ade"), "output_dir": str(output), "iterations": SEG_ITERATIONS,
        "eval_interval": SEG_ITERATIONS, "warmup_iters": 10, "img_size": 160, "crop_size": 160, "workers": 0})


@pytest.mark.slow
def test_resume_continues_at_the_saved_iteration(segmentation_run, pennfudan) -> None:
    config, _, output = segmentation_run
    with pytest.raises(SwiftFormerError, match=r"already holds a run .*last\.pth to continue it, or give another"):
        train(config)  # a new run there would replace the run's checkpoints and append to its log
    with pytest.raises(DataError, match=r"holds label 1, outside the 1 classes \(num_classes 1\)"):
        SegmentationFolder(pennfudan / "ade", "validation", num_classes=1).read_label(0)
    longer = config_from_dict({**config.to_dict(), "iterations": SEG_ITERATIONS + 2, "eval_interval": 1000})
    train(longer, resume=output / "last.pth")
    records = read_log(output / "log.jsonl")
    assert {"event": "resume", "from": str(output / "last.pth"), "iteration": SEG_ITERATIONS}.items() <= records[-2].items()
    assert records[-1]["iteration"] == SEG_ITERATIONS + 2
    assert torch.load(output / "last.pth", weights_only=True)["step"] == SEG_ITERATIONS + 2


def old_layout(checkpoint: dict) -> dict:
    """A checkpoint as version 0.1 wrote it (``last.pt``)."""
    old = {k: v for k, v in checkpoint.items() if k not in ("ema", "epoch", "rng", "class_names", "category_ids")}
    old["lr_scheduler"], old["iteration"] = old.pop("scheduler"), old.pop("step")
    old["classes"] = {"names": checkpoint["class_names"], "category_ids": checkpoint["category_ids"]}
    old["config"] = {("output" if k == "output_dir" else k): v for k, v in checkpoint["config"].items()}
    return {k: v for k, v in old.items() if not k.startswith("best_")}


@pytest.mark.slow
def test_checkpoints_of_the_old_layout_still_load(segmentation_run, tmp_path) -> None:
    config, _, output = segmentation_run
    checkpoint = torch.load(output / "best.pth", weights_only=True)
    torch.save(old_layout(checkpoint), tmp_path / "last.pt")
    model, loaded_config, class_names = load_trained(tmp_path / "last.pt")
    assert class_names == ["background", "person"] and loaded_config.output_dir == config.output_dir
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, checkpoint["model"][key])
    again = config_from_dict({**config.to_dict(), "output_dir": str(tmp_path / "run"), "eval_interval": 1000,
                              "iterations": int(checkpoint["step"]) + 1})
    train(again, resume=tmp_path / "last.pt")
    assert torch.load(tmp_path / "run/last.pth", weights_only=True)["step"] == checkpoint["step"] + 1


@pytest.mark.slow
def test_segment_eval_and_predict_cli(segmentation_run, pennfudan, tmp_path, capsys) -> None:
    _, _, output = segmentation_run
    assert cli_main(["segment", "eval", "--checkpoint", str(output / "last.pth"), "--json", str(tmp_path / "m.json")]) == 0
    assert "mIoU" in json.loads((tmp_path / "m.json").read_text())
    image = next((pennfudan / "ade/images/validation").iterdir())
    assert cli_main(["segment", "predict", str(image), "--checkpoint", str(output / "last.pth"),
                     "--output-dir", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / f"{image.stem}.segmentation.png").stat().st_size > 0
    # the old spellings: a positional checkpoint (eval, predict) and --output
    assert cli_main(["segment", "eval", str(output / "last.pth"), "--json", str(tmp_path / "old.json")]) == 0
    assert json.loads((tmp_path / "old.json").read_text()) == json.loads((tmp_path / "m.json").read_text())
    assert cli_main(["segment", "predict", str(output / "last.pth"), str(image), "--output", str(tmp_path / "old")]) == 0
    picture = f"{image.stem}.segmentation.png"
    assert (tmp_path / "old" / picture).read_bytes() == (tmp_path / "new" / picture).read_bytes()


@pytest.mark.slow
def test_detect_train_eval_predict_cli(pennfudan, tmp_path) -> None:
    """One training iteration and a 2-image validation set: the detection path wired end to end."""
    coco = pennfudan / "coco"
    val = json.loads((coco / "annotations/instances_val.json").read_text())
    keep = {i["id"] for i in val["images"][:2]}
    small = {**val, "images": val["images"][:2], "annotations": [a for a in val["annotations"] if a["image_id"] in keep]}
    (tmp_path / "val2.json").write_text(json.dumps(small))
    run = tmp_path / "run"
    args = ["detect", "train", "--config", "pennfudan_maskrcnn_xs", "--data", str(coco), "--output-dir", str(run),
            "--set", "epochs=null", "--set", "iterations=1", "--set", "warmup_iters=0", "--workers", "0",
            "--set", "min_size=160", "--set", "max_size=192", "--set", f"val_annotations={tmp_path / 'val2.json'}"]
    assert cli_main(args) == 0
    checkpoint = torch.load(run / "last.pth", weights_only=True)
    assert (checkpoint["class_names"], checkpoint["category_ids"]) == (["person"], [1])
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP"} <= set(checkpoint["metrics"])
    assert checkpoint["best_bbox_AP"] == checkpoint["metrics"]["bbox_AP"] and (run / "best.pth").is_file()
    assert cli_main(["detect", "eval", "--checkpoint", str(run / "last.pth"), "--workers", "0"]) == 0
    image = coco / "val" / small["images"][0]["file_name"]
    assert cli_main(["detect", "predict", str(image), "--checkpoint", str(run / "last.pth"),
                     "--output-dir", str(tmp_path / "pred"), "--score-threshold", "0"]) == 0
    assert (tmp_path / "pred" / f"{image.stem}.detection.png").is_file()


def test_wrong_task_recipe_is_a_one_line_error(capsys) -> None:
    assert cli_main(["segment", "train", "--config", "pennfudan_maskrcnn_xs", "--data", "x"]) == 2
    assert "detection recipe" in capsys.readouterr().err


def test_dense_cli_speaks_the_classification_vocabulary(capsys) -> None:
    from swiftformer.cli import build_parser

    parse = build_parser().parse_args
    for flag in ("--output-dir", "--output"):  # --output: the old spelling
        args = parse(["segment", "train", flag, "runs/x", "--batch-size", "3", "--workers", "0", "--device", "cpu"])
        assert (args.output_dir, args.batch_size, args.workers, args.device) == ("runs/x", 3, 0, "cpu")
    assert parse(["detect", "predict", "a.jpg", "--output", "pred"]).output_dir == "pred"
    assert cli_main(["detect", "eval"]) == 2 and "needs --checkpoint" in capsys.readouterr().err
    assert cli_main(["detect", "eval", "a.pth", "--checkpoint", "b.pth"]) == 2
    assert "two checkpoints" in capsys.readouterr().err


def test_learning_rate_schedules() -> None:
    step = DenseConfig(lr=1.0, warmup_iters=10, warmup_ratio=0.0, milestones=(8, 11), epochs=12)
    factor = lr_factor(step, total_iters=120, iters_per_unit=10)
    assert [factor(i) for i in (0, 5, 10, 79, 80, 110)] == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.1, 0.01])
    poly = DenseConfig(lr=1.0, sched="poly", power=1.0, warmup_iters=0, epochs=None, iterations=100)
    factor = lr_factor(poly, total_iters=100, iters_per_unit=1)
    assert [factor(i) for i in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0])


def test_shipped_recipes_load() -> None:
    names = list_configs()
    assert {"maskrcnn_1x_swiftformer_l1", "semantic_fpn_ade20k_swiftformer_l1", "pennfudan_maskrcnn_xs",
            "pennfudan_semantic_fpn_xs"} <= set(names)
    mask_rcnn = load_config("maskrcnn_1x_swiftformer_l1")
    assert (mask_rcnn.min_size, mask_rcnn.max_size, mask_rcnn.lr, mask_rcnn.epochs, mask_rcnn.milestones) == (800, 1333, 2e-4, 12, (8, 11))
    fpn = load_config("semantic_fpn_ade20k_swiftformer_l3")
    assert (fpn.crop_size, fpn.iterations, fpn.sched, fpn.num_classes, fpn.model) == (512, 40000, "poly", 150, "swiftformer_l3")
    for family in ("maskrcnn_1x", "semantic_fpn_ade20k"):  # the paper's recipe once, per backbone what differs
        l1, l3 = (load_config(f"{family}_swiftformer_{v}").to_dict() for v in ("l1", "l3"))
        assert {k for k in l1 if l1[k] != l3[k]} == {"model", "output_dir"}
        written = yaml.safe_load((configs_dir() / f"{family}_swiftformer_l3.yaml").read_text())
        assert set(written) == {"base", "model", "output_dir"}
    with pytest.raises(SwiftFormerError, match="unknown config key"):
        load_config("pennfudan_semantic_fpn_xs", {"learning_rate": 1})
    with pytest.raises(SwiftFormerError, match="exactly one of epochs and iterations"):
        load_config("pennfudan_semantic_fpn_xs", {"epochs": 3})
    assert config_from_dict({"output": "runs/old"}).output_dir == "runs/old"  # the key of configs in old checkpoints
