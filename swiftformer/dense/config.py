"""Dense-prediction recipes: a :class:`DenseConfig` per YAML file in ``swiftformer/configs/dense/``.

The loader is classification's (:mod:`swiftformer.recipes`): ``base:`` chains (the paper's COCO and ADE20K
recipes are in ``_base_/``), type checks from the fields, ``--set key=value``. The resolved config is
stored in every checkpoint and run directory, so ``eval`` and ``predict`` rebuild the same model.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .. import recipes
from ..errors import SwiftFormerError
from ..recipes import AMP_MODES, Recipe

TASKS = ("detection", "segmentation")
SCHEDULES = ("step", "poly")  # what swiftformer.dense.engine.lr_factor decays by


@dataclass
class DenseConfig(Recipe):
    """Everything that defines a detection or segmentation run; defaults are the paper's Mask R-CNN 1×."""

    ranges: typing.ClassVar[dict[str, str]] = {  # see swiftformer.recipes.check_range
        **dict.fromkeys(("out_channels", "min_size", "max_size", "head_channels", "img_size", "crop_size",
                         "batch_size", "epochs", "iterations", "num_classes", "eval_interval", "log_interval"),
                        "at least 1"),
        "frozen_stages": "0 to 4 (the stages)",
        **dict.fromkeys(("drop_path", "workers", "weight_decay", "min_lr", "warmup_iters", "power",
                         "seed"), "0 or more"),
        **dict.fromkeys(("lr", "clip_grad"), "above 0"),
        **dict.fromkeys(("hflip", "gamma", "warmup_ratio"), "between 0 and 1"),
    }

    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        return {"task": TASKS, "sched": SCHEDULES, "amp": AMP_MODES}

    task: str = "detection"
    # model
    model: str = "swiftformer_xs"
    pretrained: str | None = None  # classification weights of the backbone (any format); heads are dropped
    drop_path: float = 0.0
    out_channels: int = 256  # FPN width
    frozen_stages: int = 0  # k >= 1 freezes the stem and the first k stages
    freeze_bn: bool = False
    sync_bn: bool = False  # under DDP: BatchNorm statistics over all GPUs
    num_classes: int | None = None  # segmentation: classes incl. background; detection: from the COCO file
    class_names: tuple[str, ...] | None = None  # segmentation: the name of each label value (default "0", "1", ...)
    masks: bool = True  # detection: Mask R-CNN (True) or Faster R-CNN (False)
    min_size: int = 800  # detection: short side after the detector's resize
    max_size: int = 1333  # detection: long side cap
    detector: dict[str, Any] = field(default_factory=dict)  # further torchvision MaskRCNN arguments
    head_channels: int = 128  # segmentation: width of the semantic-FPN branches
    # data
    data: str | None = None
    train_images: str = "train2017"  # detection: relative to data
    train_annotations: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_annotations: str = "annotations/instances_val2017.json"
    train_split: str = "training"  # segmentation: images/<split>, annotations/<split>
    val_split: str = "validation"
    img_size: int = 512  # segmentation: short side (training: before the random rescale)
    crop_size: int = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    reduce_zero_label: bool = False  # ADE20K: label 0 ("other") is ignored, k -> k - 1
    ignore_index: int = 255
    hflip: float = 0.5
    workers: int = 4
    # optimisation
    batch_size: int = 2  # per process
    epochs: int | None = 12  # the duration: epochs, or iterations when `iterations` is set
    iterations: int | None = None
    lr: float = 2e-4
    weight_decay: float = 1e-4
    sched: str = "step"  # step (milestones, gamma) or poly (power, down to min_lr)
    milestones: tuple[int, ...] = (8, 11)  # in the duration's unit (epochs or iterations)
    gamma: float = 0.1
    power: float = 0.9
    min_lr: float = 0.0
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    clip_grad: float | None = None  # max gradient norm
    amp: str = "none"  # none, bf16, fp16
    # run
    eval_interval: int = 1  # in the duration's unit; also when checkpoints are written
    log_interval: int = 20  # iterations between log records
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/dense"

    renamed_keys: typing.ClassVar[dict[str, str]] = {"output": "output_dir"}  # configs in checkpoints before 0.2

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SwiftFormerError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if (self.epochs is None) == (self.iterations is None):
            raise SwiftFormerError("set exactly one of epochs and iterations (the other to null)")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise SwiftFormerError(f"config class_names: {len(self.class_names)} names for num_classes "
                                   f"{self.num_classes} (a name per label value, background included)")

    @property
    def by_iteration(self) -> bool:
        return self.iterations is not None


def config_from_dict(values: dict[str, Any], overrides: dict[str, Any] | None = None) -> DenseConfig:
    """A :class:`DenseConfig` from ``values`` then ``overrides``; unknown keys are an error naming them."""
    return recipes.config_from_dict(DenseConfig, values, overrides)


def configs_dir() -> Any:
    return resources.files("swiftformer") / "configs" / "dense"


def list_configs() -> list[str]:
    """Names of the shipped dense recipes."""
    return recipes.list_shipped(configs_dir())


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> DenseConfig:
    """A shipped recipe (by name) or a YAML file (by path), with ``overrides`` on top."""
    return recipes.load_config(DenseConfig, name_or_path, configs_dir(), overrides)
