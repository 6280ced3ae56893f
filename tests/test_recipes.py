"""Recipe files: the official recipe per variant, what differs between variants, overrides."""
from __future__ import annotations

import pytest
import yaml

from swiftformer.errors import SwiftFormerError
from swiftformer.recipes import TrainConfig, apply_overrides, list_recipes, load_recipe, parse_set, recipe_text, save_config

VARIANT_RECIPES = ["swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3"]
RANDAUG = "rand-m9-mstd0.5-inc1"


def test_every_variant_and_the_demo_ship_a_recipe():
    assert set(VARIANT_RECIPES + ["demo_digits"]) <= set(list_recipes())


@pytest.mark.parametrize("name", VARIANT_RECIPES)
def test_variant_recipe_is_the_official_one(name):
    config = load_recipe(name)
    assert config.model == name
    assert (config.optimizer, config.lr, config.weight_decay) == ("adamw", 2e-3, 0.025)
    assert (config.sched, config.warmup_epochs, config.warmup_lr, config.min_lr, config.epochs) == ("cosine", 5, 1e-6, 1e-5, 300)
    assert config.batch_size == 128 and config.accum_steps == 1
    assert (config.color_jitter, config.reprob, config.smoothing, config.repeated_aug) == (0.4, 0.25, 0.1, 3)
    assert config.ema_decay == 0.99996
    assert (config.clip_mode, config.clip_grad) == ("agc", 0.01)
    assert (config.distillation, config.distillation_alpha, config.distillation_tau) == ("hard", 0.5, 1.0)
    assert config.teacher.startswith("regnety_160")
    assert (config.interpolation, config.crop_pct, config.img_size) == ("bicubic", 0.875, 224)
    assert "2048" in recipe_text(name), "the effective-batch arithmetic is written out"


@pytest.mark.parametrize(
    "name, auto_augment, mixup, cutmix",
    [
        ("swiftformer_xs", None, 0.0, 0.0),
        ("swiftformer_s", RANDAUG, 0.0, 0.0),
        ("swiftformer_l1", RANDAUG, 0.8, 1.0),
        ("swiftformer_l3", RANDAUG, 0.8, 1.0),
    ],
)
def test_per_variant_augmentation(name, auto_augment, mixup, cutmix):
    config = load_recipe(name)
    assert (config.auto_augment, config.mixup, config.cutmix) == (auto_augment, mixup, cutmix)


def test_variant_recipes_state_only_what_differs_from_the_imagenet_base():
    base = load_recipe("_base_/imagenet")
    assert "2048" in recipe_text("_base_/imagenet"), "the effective-batch arithmetic is written out once"
    assert "_base_/imagenet" not in list_recipes()  # a base, not a recipe to train with
    for name in VARIANT_RECIPES:
        written = yaml.safe_load(recipe_text(name))
        assert written["base"] == "_base_/imagenet"
        assert set(written) <= {"base", "model", "auto_augment", "mixup", "cutmix"}, name
        differing = {k for k, v in load_recipe(name).to_dict().items() if v != base.to_dict()[k]}
        assert differing <= {"model", "auto_augment", "mixup", "cutmix"}, name


def test_base_chains_resolve_in_order_and_cycles_are_an_error(tmp_path):
    (tmp_path / "parent.yaml").write_text("base: swiftformer_l1\nepochs: 30\nlr: 1.0e-3\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nlr: 5.0e-4\n")  # relative to the including file
    config = load_recipe(tmp_path / "child.yaml", {"batch_size": 8})
    assert (config.model, config.mixup, config.epochs, config.lr, config.batch_size) == ("swiftformer_l1", 0.8, 30, 5e-4, 8)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nepochs: 1\n")
    with pytest.raises(SwiftFormerError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(SwiftFormerError, match="base must name a recipe"):
        load_recipe(tmp_path / "bad.yaml")


def test_types_come_from_the_dataclass_fields():
    with pytest.raises(SwiftFormerError, match="config epochs: expected int"):
        apply_overrides(TrainConfig(), {"epochs": 2.5})
    with pytest.raises(SwiftFormerError, match="config epochs: expected int, got null"):
        apply_overrides(TrainConfig(), {"epochs": None})  # not an optional field
    with pytest.raises(SwiftFormerError, match="config crop_scale: expected a list of 2"):
        apply_overrides(TrainConfig(), {"crop_scale": [0.5]})
    with pytest.raises(SwiftFormerError, match="config teacher_checkpoint: expected str"):
        apply_overrides(TrainConfig(), {"teacher_checkpoint": 3})
    config = apply_overrides(TrainConfig(), {"num_classes": None, "clip_grad": 1, "crop_scale": [1, 1]})
    assert config.num_classes is None and config.clip_grad == 1.0 and config.crop_scale == (1.0, 1.0)


def test_overrides_apply_on_top_and_are_checked():
    config = load_recipe("swiftformer_s", parse_set(["lr=1e-3", "auto_augment=null", "crop_scale=[0.5, 1]", "mixup=1"]))
    assert config.lr == 1e-3 and isinstance(config.lr, float)  # YAML reads 1e-3 as a string: coerced
    assert config.auto_augment is None and config.crop_scale == (0.5, 1.0) and config.mixup == 1.0
    with pytest.raises(SwiftFormerError, match="unknown config key"):
        apply_overrides(TrainConfig(), {"learning_rate": 1.0})
    with pytest.raises(SwiftFormerError, match="expected true or false"):
        apply_overrides(TrainConfig(), {"channels_last": "yes please"})
    with pytest.raises(SwiftFormerError, match="expected a number"):
        apply_overrides(TrainConfig(), {"lr": "fast"})
    with pytest.raises(SwiftFormerError, match="KEY=VALUE"):
        parse_set(["lr"])
    with pytest.raises(SwiftFormerError, match="unknown recipe"):
        load_recipe("swiftformer_xxl")


@pytest.mark.parametrize("key,value,named", [
    ("attention", "additve", "additive, additive_legacy"), ("interpolation", "bicubik", "bicubic"),
    ("optimizer", "adamww", "closest: adamw"), ("sched", "plateau", "cosine"), ("amp", "fp8", "bf16"),
    ("clip_mode", "agcc", "agc"), ("dataset", "imagenet", "folder"), ("distillation", "hardd", "hard"),
])
def test_a_name_outside_its_fields_choices_is_named_before_the_run(key, value, named):
    """Before, each surfaced as a traceback from the model, timm or the first step (or never, for a dataset)."""
    with pytest.raises(SwiftFormerError, match=rf"config {key}: '{value}' is none of .*{named}"):
        apply_overrides(TrainConfig(), {key: value})


def test_dense_names_and_stages_are_checked():
    from swiftformer.dense.config import config_from_dict

    for overrides, message in [({"sched": "cosine"}, "sched: 'cosine' is none of step, poly"),
                               ({"amp": "fp32"}, "amp: 'fp32' is none of none, bf16, fp16"),
                               ({"frozen_stages": 5}, "frozen_stages: must be 0 to 4")]:
        with pytest.raises(SwiftFormerError, match=message):
            config_from_dict({}, overrides)
    assert apply_overrides(TrainConfig(), {"optimizer": "lookahead_adamw"}).optimizer == "lookahead_adamw"
    assert apply_overrides(TrainConfig(), {"optimizer": "AdamW"}).optimizer == "adamw"  # timm reads any case


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_recipe("demo_digits", {"epochs": 3, "num_classes": 10})
    save_config(config, tmp_path / "config.yaml")
    assert load_recipe(tmp_path / "config.yaml") == config


def test_cli_flags_override_the_recipe_and_set_overrides_flags():
    from swiftformer.cli import build_parser
    from swiftformer.cli.train import resolve_config

    args = build_parser().parse_args(
        ["train", "--model", "swiftformer_l1", "--epochs", "7", "--lr", "0.01", "--no-channels-last", "--compile",
         "--set", "lr=0.02"]
    )
    config = resolve_config(args)
    assert config.model == "swiftformer_l1" and config.mixup == 0.8  # the L1 recipe was picked from --model
    assert config.epochs == 7 and config.lr == 0.02
    assert config.channels_last is False and config.compile is True  # switches turn recipe values off and on
    assert config.batch_size == 128  # untouched recipe values stay
    untouched = resolve_config(build_parser().parse_args(["train", "--model", "swiftformer_l1"]))
    assert untouched.epochs == 300 and untouched.lr == 2e-3 and untouched.channels_last is True  # flags not given


def _imported_modules(module) -> set[str]:
    """Every swiftformer module ``module``'s file imports, those inside functions too."""
    import ast
    import importlib.util
    from pathlib import Path

    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__)
            found |= {base} if node.module else {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("swiftformer")}
    return found


def test_the_configs_own_their_choices_and_import_nothing_above_them():
    """The lists of allowed values live with the configs; the engines import them from there, not the reverse."""
    import swiftformer.dense.config as dense_config
    import swiftformer.recipes as recipes
    from swiftformer.dense.config import DenseConfig
    from swiftformer.engine import AMP_DTYPES

    below = {"swiftformer.checkpoint", "swiftformer.data_config", "swiftformer.distributed", "swiftformer.errors",
             "swiftformer.models.attention"}
    assert _imported_modules(recipes) <= below
    assert _imported_modules(dense_config) <= below | {"swiftformer.recipes", "swiftformer"}
    assert tuple(AMP_DTYPES) == recipes.AMP_MODES == DenseConfig.choices()["amp"]
    assert TrainConfig.choices()["sched"] == recipes.SCHEDULES and DenseConfig.choices()["sched"] == ("step", "poly")
