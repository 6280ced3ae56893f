"""A whole run: run directory, checkpoint contents, exact resume, fine-tuning from other formats."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import swiftformer.train
from swiftformer import create_model, save_checkpoint
from swiftformer.cli import main as cli_main
from swiftformer.recipes import load_recipe
from swiftformer.train import build_ema, build_model, main

pytestmark = pytest.mark.slow

# Every source of randomness on: crops, flips, random erasing (torch + python), mixup/cutmix (numpy),
# drop path (torch), label smoothing; so that an exact resume must restore all of them.
TINY = dict(
    dataset="digits", img_size=32, batch_size=16, train_subset=64, val_subset=40, epochs=2, warmup_epochs=1,
    workers=0, hflip=0.5, reprob=0.25, mixup=0.5, cutmix=1.0, drop_path=0.1, repeated_aug=1, ema_decay=0.9,
    distillation="none", progress=False,
)


def test_resume_continues_exactly(tmp_path):
    straight = main(load_recipe("demo_digits", {**TINY, "output_dir": str(tmp_path / "straight")}))
    main(load_recipe("demo_digits", {**TINY, "output_dir": str(tmp_path / "split"), "stop_after": 1}))
    assert json.loads((tmp_path / "split" / "log.jsonl").read_text())["epoch"] == 1  # really stopped after 1
    resumed = main(load_recipe("demo_digits", {**TINY, "output_dir": str(tmp_path / "split"),
                                               "resume": str(tmp_path / "split" / "last.pth")}))
    for name, tensor in straight.model.state_dict().items():
        assert torch.allclose(tensor.float(), resumed.model.state_dict()[name].float(), atol=1e-6, rtol=0), name
    for name, tensor in straight.ema.state_dict().items():
        assert torch.allclose(tensor.float(), resumed.ema.state_dict()[name].float(), atol=1e-6, rtol=0), name
    assert resumed.record["step"] == straight.record["step"]
    assert resumed.record["val_top1"] == straight.record["val_top1"]
    assert len((tmp_path / "split" / "log.jsonl").read_text().splitlines()) == 2

    # the run directory and the plain-dict checkpoint
    run = tmp_path / "straight"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.jsonl", "last.pth", "best.pth", "curves.png"}
    assert yaml.safe_load((run / "config.yaml").read_text())["num_classes"] == 10
    checkpoint = torch.load(run / "last.pth", weights_only=True)
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "epoch", "step", "config", "rng", "class_names"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2 and checkpoint["class_names"] == [str(d) for d in range(10)]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["val_count"] == 40 and "ema_top1" in r for r in records)


def test_finetune_loads_any_format_and_replaces_the_head(tmp_path):
    source = create_model("swiftformer_xs")  # 1000 ImageNet classes
    path = save_checkpoint(source, tmp_path / "official.pth", format="official")
    config = load_recipe("demo_digits", {"finetune": str(path)})
    model = build_model(config, num_classes=10)
    assert model.head.out_features == 10
    assert torch.equal(model.state_dict()["stem.0.weight"], source.state_dict()["stem.0.weight"])
    assert torch.equal(model.stages[3].blocks[-1].attn.proj.weight, source.stages[3].blocks[-1].attn.proj.weight)


def test_a_resume_takes_new_locations_and_more_epochs_but_not_fewer():
    from swiftformer.errors import SwiftFormerError
    from swiftformer.train import check_resumed_config

    config = load_recipe("demo_digits", {"epochs": 3, "finetune": "/old/w.pth"})
    checkpoint = {"epoch": 2, "config": config.to_dict()}
    moved = load_recipe("demo_digits", {"epochs": 5, "finetune": "/new/w.pth", "data": "/new/data"})
    check_resumed_config("last.pth", checkpoint, moved)  # a moved copy of its files, and a longer run
    for overrides, said in (({"epochs": 2}, "has trained 2 epochs of its 3"), ({"lr": 0.5}, r"lr 0.5 \(the run's: ")):
        with pytest.raises(SwiftFormerError, match=said):
            check_resumed_config("last.pth", checkpoint, load_recipe("demo_digits", {**config.to_dict(), **overrides}))


def test_a_finetuned_runs_head_rows_follow_their_class_names():
    """bird, cat, dog from a run of cat, dog, ship: the cat and dog rows move to their new places (kept by position
    they would answer "dog" for cat), bird starts fresh; both heads alike."""
    from swiftformer.train import match_head_by_class_name

    run = create_model("swiftformer_xs", num_classes=3)
    finetuned = {"model": run.state_dict(), "class_names": ["cat", "dog", "ship"]}
    model = create_model("swiftformer_xs", num_classes=3)
    model.load_state_dict(run.state_dict())
    said = match_head_by_class_name(model, finetuned, ["bird", "cat", "dog"])
    assert said == "classifier head matched by class name: 2 kept, 1 new (bird)"
    for head, old in ((model.head, run.head), (model.head_dist, run.head_dist)):
        assert torch.equal(head.weight[1:], old.weight[:2]) and torch.equal(head.bias[1:], old.bias[:2])
        assert not torch.equal(head.weight[0], old.weight[0]) and not torch.equal(head.weight[0], old.weight[2])


def test_the_imagenet_recipe_on_one_process_or_a_short_run_is_warned(caplog):
    from swiftformer.train import warn_about_scale

    caplog.set_level("WARNING")
    warn_about_scale(load_recipe("swiftformer_xs", {"epochs": 3}), world_size=1)
    assert "repeated_aug 3 on one process" in caplog.text and "warmup_epochs 5 covers the whole run of 3" in caplog.text
    caplog.clear()
    warn_about_scale(load_recipe("swiftformer_xs", {"epochs": 30}), world_size=8)  # what the recipe was written for
    warn_about_scale(load_recipe("cifar10_mini"), world_size=1)
    assert caplog.text == ""


def test_the_ema_tracks_a_short_run_at_the_imagenet_decay(tmp_path, monkeypatch):
    """With ImageNet's decay 0.99996 and no warm-up, the EMA of 8 updates is the weights of update 1 (chance);
    with the warm-up it follows the model, and the decay still reaches the recipe's on an ImageNet-length run."""
    built = {}
    real_build_model = swiftformer.train.build_model

    def remember_initial_weights(config, num_classes):
        model = real_build_model(config, num_classes)
        built.update({k: v.detach().clone() for k, v in model.named_parameters()})
        return model

    monkeypatch.setattr(swiftformer.train, "build_model", remember_initial_weights)
    overrides = {**TINY, "epochs": 1, "warmup_epochs": 0, "mixup": 0.0, "cutmix": 0.0, "batch_size": 8,
                 "ema_decay": 0.99996, "output_dir": str(tmp_path / "run")}
    result = main(load_recipe("demo_digits", overrides))
    assert result.record["step"] == 8
    model, ema = dict(result.model.named_parameters()), dict(result.ema.named_parameters())
    to_ema = sum((ema[k] - model[k]).double().square().sum() for k in built).sqrt()
    travelled = sum((built[k] - model[k]).double().square().sum() for k in built).sqrt()
    assert to_ema < 0.5 * travelled, f"EMA {to_ema:.4g} from the model, which moved {travelled:.4g} from its start"

    ema_module = build_ema(create_model("swiftformer_xs", num_classes=10), load_recipe("swiftformer_xs"))
    assert ema_module.get_decay(100) < 0.99 and ema_module.get_decay(187_500) == 0.99996  # official: 187,500 updates


def test_a_checkpoint_written_before_the_ema_warmup_resumes(tmp_path):
    run = tmp_path / "run"
    main(load_recipe("demo_digits", {**TINY, "epochs": 1, "output_dir": str(run)}))
    checkpoint = torch.load(run / "last.pth", weights_only=True)
    for key in ("ema_warmup", "overwrite"):  # config keys of later versions
        del checkpoint["config"][key]
    torch.save(checkpoint, run / "last.pth")
    assert cli_main(["train", "--resume", str(run / "last.pth"), "--epochs", "2"]) == 0
    resumed = torch.load(run / "last.pth", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["ema"].keys() == checkpoint["ema"].keys()
