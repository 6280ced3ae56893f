"""Training recipes: one small YAML file per variant, overridden from the command line.

A recipe is a :class:`TrainConfig`. The shipped files (``swiftformer/configs/<name>.yaml``) reproduce the
official ImageNet recipe per variant and say in their header what differs and why;
``demo_digits.yaml`` is the short recipe behind ``swiftformer demo``. Resolution order: dataclass defaults,
then the recipe file, then command-line overrides; the resolved config is saved with every run.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import SwiftFormerError


# How long a collective waits for the other ranks before failing. A rank that dies closes its connections and
# the others fail at once; this bounds the wait for a rank that hangs (stuck I/O, a stopped process, a lost
# node). It must exceed the longest stretch one rank works alone: rank 0 writing a checkpoint.
DIST_TIMEOUT_SECONDS = 600.0


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the official SwiftFormer-XS recipe."""

    # model
    model: str = "swiftformer_xs"
    attention: str = "additive"
    num_classes: int | None = None  # None: the dataset's class count
    drop_path: float = 0.0
    finetune: str | None = None  # start from these weights (any format load_checkpoint reads), fresh head
    # data
    dataset: str = "folder"  # folder (ImageNet layout: DATA/train, DATA/val), digits, cifar10
    data: str | None = None
    download: bool = False
    img_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    hflip: float = 0.5
    auto_augment: str | None = None
    color_jitter: float = 0.4
    reprob: float = 0.25
    repeated_aug: int = 3
    train_subset: int | None = None  # use only the first N training images (smoke tests, CI)
    val_subset: int | None = None
    workers: int = 8
    skip_bad_images: bool = False  # leave unreadable images out (logged and counted) instead of stopping
    # optimisation
    epochs: int = 300
    batch_size: int = 128  # per process
    accum_steps: int = 1
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.025
    opt_eps: float = 1e-8
    sched: str = "cosine"
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    clip_grad: float | None = 0.01
    clip_mode: str = "agc"
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    ema_decay: float | None = 0.99996  # None: no EMA
    # distillation
    distillation: str = "hard"  # none, soft, hard
    distillation_alpha: float = 0.5
    distillation_tau: float = 1.0
    teacher: str = "regnety_160.deit_in1k"
    teacher_checkpoint: str | None = None
    # speed and hardware
    device: str = "auto"
    dist_timeout: float = DIST_TIMEOUT_SECONDS  # seconds a rank waits for the others before failing (a dead or hung rank)
    amp: str = "none"  # none, bf16, fp16
    channels_last: bool = True  # same math; 1x1 convolutions run as GEMMs (models.swiftformer.PointwiseConv2d)
    compile: bool = False
    grad_checkpointing: bool = False
    # run
    seed: int = 0
    output_dir: str = "runs/train"
    resume: str | None = None
    stop_after: int | None = None  # leave after this many epochs in this invocation (job time limits); --resume goes on
    eval_every: int = 1
    tensorboard: bool = False
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists for tuples): safe for YAML and for ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}
# What a number must be to make sense (None stays allowed where the default is None); see check_range.
RANGE_TESTS = {
    "at least 1": lambda v: v >= 1, "0 or more": lambda v: v >= 0, "above 0": lambda v: v > 0,
    "between 0 and 1": lambda v: 0 <= v <= 1, "above 0 and at most 1": lambda v: 0 < v <= 1,
}
RANGES = {
    **dict.fromkeys(("epochs", "batch_size", "accum_steps", "repeated_aug", "eval_every", "stop_after", "num_classes"),
                    "at least 1"),
    **dict.fromkeys(("workers", "seed", "drop_path", "warmup_epochs", "warmup_lr", "min_lr", "weight_decay", "mixup",
                     "cutmix", "distillation_tau", "train_subset", "val_subset"), "0 or more"),
    **dict.fromkeys(("lr", "opt_eps", "dist_timeout", "clip_grad"), "above 0"),
    **dict.fromkeys(("hflip", "reprob", "color_jitter", "smoothing", "mixup_prob", "mixup_switch_prob",
                     "distillation_alpha"), "between 0 and 1"),
    **dict.fromkeys(("crop_pct", "ema_decay"), "above 0 and at most 1"),
}


def _configs_dir():
    return resources.files("swiftformer") / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``swiftformer/configs``."""
    return sorted(p.name[: -len(".yaml")] for p in _configs_dir().iterdir() if p.name.endswith(".yaml"))


def recipe_text(name_or_path: str | Path) -> str:
    """The YAML text of a shipped recipe (by name) or of a file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SwiftFormerError(f"config file not found: {path}")
        return path.read_text()
    shipped = _configs_dir() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise SwiftFormerError(f"unknown recipe {str(name_or_path)!r} (shipped: {', '.join(list_recipes())}; or give a .yaml path)")
    return shipped.read_text()


def _coerce(name: str, value: Any) -> Any:
    """Check a value against the field's default type; YAML already gives ints, floats, bools, null."""
    default = FIELDS[name].default
    if value is None or default is None:
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise SwiftFormerError(f"config {name}: expected a list of {len(default)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SwiftFormerError(f"config {name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float) and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except (TypeError, ValueError):
            raise SwiftFormerError(f"config {name}: expected a number, got {value!r}") from None
    if not isinstance(value, type(default)):
        raise SwiftFormerError(f"config {name}: expected {type(default).__name__}, got {value!r}")
    return value


def check_range(name: str, value: Any, ranges: dict[str, str] = RANGES) -> Any:
    """``value``, or a :class:`SwiftFormerError` naming the key when a number is not finite or out of its range
    (``ranges``: field -> a key of :data:`RANGE_TESTS`); for values that come through YAML or ``--set``."""
    if value is None or isinstance(value, (bool, str, tuple, list, dict)):
        return value
    if not math.isfinite(value):
        raise SwiftFormerError(f"config {name}: expected a finite number, got {value!r}")
    wanted = ranges.get(name)
    if wanted is not None and not RANGE_TESTS[wanted](value):
        raise SwiftFormerError(f"config {name}: must be {wanted}, got {value!r}")
    return value


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with ``overrides`` applied; unknown keys are an error naming the key."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise SwiftFormerError(f"unknown config key(s): {', '.join(unknown)}")
    return dataclasses.replace(config, **{k: check_range(k, _coerce(k, v)) for k, v in overrides.items()})


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a recipe, then ``overrides`` (e.g. from the command line) on top."""
    values = yaml.safe_load(recipe_text(name_or_path)) or {}
    if not isinstance(values, dict):
        raise SwiftFormerError(f"config {name_or_path}: expected a mapping of keys to values")
    return apply_overrides(apply_overrides(TrainConfig(), values), overrides or {})


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "auto_augment=null"]`` -> ``{"lr": 0.001, "auto_augment": None}`` (values parsed as YAML)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SwiftFormerError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return overrides


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_recipe`)."""
    from .checkpoint import atomic_write

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))
