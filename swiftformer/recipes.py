"""Recipes: one small YAML file per run, a typed dataclass, overrides from the command line.

One mechanism serves both task families: :class:`TrainConfig` (classification, ``swiftformer/configs``)
and :class:`swiftformer.dense.config.DenseConfig` (``swiftformer/configs/dense``). A recipe file states
only what differs from the recipe it names in ``base:`` (a shipped name such as ``_base_/imagenet``, or a
YAML path relative to the file); the paper's ImageNet recipe is written once, in
``configs/_base_/imagenet.yaml``. Resolution order: dataclass defaults, the base chain, the recipe file,
then command-line overrides (``--set key=value``). Values are checked against the dataclass field types
and unknown keys are an error naming them. The resolved config is saved with every run and loads back.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .data_config import INTERPOLATIONS
from .distributed import DIST_TIMEOUT_SECONDS
from .errors import SwiftFormerError
from .models.attention import ATTENTIONS

BASE_KEY = "base"
# What a number must be to make sense (None stays allowed where the field admits it); see check_range.
RANGE_TESTS = {
    "at least 1": lambda v: v >= 1, "0 or more": lambda v: v >= 0, "above 0": lambda v: v > 0,
    "between 0 and 1": lambda v: 0 <= v <= 1, "above 0 and at most 1": lambda v: 0 < v <= 1,
    "0 to 4 (the stages)": lambda v: 0 <= v <= 4,
}

# The names a classification run's fields may take; the modules that act on them import them from here.
DATASETS = ("folder", "digits", "cifar10")  # swiftformer.data.build_dataset
# timm's create_scheduler_v2 schedules that training steps per update (plateau steps on a metric, which it never gets)
SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly")
CLIP_MODES = ("agc", "norm", "value")  # timm.utils.dispatch_clip_grad's
AMP_MODES = ("none", "bf16", "fp16")  # swiftformer.engine.AMP_DTYPES, both task families
DISTILLATION_KINDS = ("none", "soft", "hard")  # swiftformer.losses.DistillationLoss


class Recipe:
    """What the config dataclasses of both task families share: plain-value export."""

    # keys of older versions -> their current name (configs stored in old checkpoints still load)
    renamed_keys: typing.ClassVar[dict[str, str]] = {}
    # field -> a key of RANGE_TESTS, for the numbers that have a sensible range
    ranges: typing.ClassVar[dict[str, str]] = {}

    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        """field -> the names it may take, for the fields that name one of a fixed set (checked like ``ranges``)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists for tuples): safe for YAML and for ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


R = TypeVar("R", bound=Recipe)


@dataclass
class TrainConfig(Recipe):
    """Everything that defines a training run. Defaults are the official SwiftFormer-XS recipe."""

    ranges: typing.ClassVar[dict[str, str]] = {
        **dict.fromkeys(("epochs", "batch_size", "accum_steps", "repeated_aug", "eval_every", "stop_after",
                         "num_classes"), "at least 1"),
        **dict.fromkeys(("workers", "seed", "drop_path", "warmup_epochs", "warmup_lr", "min_lr", "weight_decay",
                         "mixup", "cutmix", "distillation_tau", "train_subset", "val_subset"), "0 or more"),
        **dict.fromkeys(("lr", "opt_eps", "dist_timeout", "clip_grad"), "above 0"),
        **dict.fromkeys(("hflip", "reprob", "color_jitter", "smoothing", "mixup_prob", "mixup_switch_prob",
                         "distillation_alpha"), "between 0 and 1"),
        **dict.fromkeys(("crop_pct", "ema_decay"), "above 0 and at most 1"),
    }

    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        from timm.optim import list_optimizers

        optimizers = tuple(list_optimizers())  # timm's, each also behind its Lookahead wrapper
        return {"attention": ATTENTIONS, "dataset": DATASETS, "interpolation": INTERPOLATIONS,
                "optimizer": optimizers + tuple(f"lookahead_{name}" for name in optimizers),
                "sched": SCHEDULES, "clip_mode": CLIP_MODES, "amp": AMP_MODES, "distillation": DISTILLATION_KINDS}

    # model
    model: str = "swiftformer_xs"
    attention: str = "additive"
    num_classes: int | None = None  # None: the dataset's class count
    drop_path: float = 0.0
    finetune: str | None = None  # start from these weights (any format load_checkpoint reads), fresh head
    qat: bool = False  # fine-tune the fused model through int8 fake quantization, distilling from the finetune
    # weights (swiftformer.qat); the distillation and teacher keys are then unused
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
    ema_warmup: bool = True  # decay ramps up to ema_decay (train.EMA_WARMUP_GAMMA): the EMA tracks short runs too
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
    overwrite: bool = False  # a new run may replace the run already in output_dir
    stop_after: int | None = None  # leave after this many epochs in this invocation (job time limits); --resume goes on
    eval_every: int = 1
    tensorboard: bool = False
    progress: bool = True


# The loader (both task families) --------------------------------------------------------------------------
def _describe(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind).replace("typing.", ""))


def _check(name: str, kind: Any, value: Any) -> Any:
    """``value`` as the field type ``kind`` says; YAML gives ints, floats, bools, null, lists and dicts."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _check(name, kind, value)
    if kind is Any:
        return value
    if value is None:
        raise SwiftFormerError(f"config {name}: expected {_describe(kind)}, got null")
    if origin is tuple:
        fixed = args[-1] is not Ellipsis
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            count = f"{len(args)} " if fixed else ""
            raise SwiftFormerError(f"config {name}: expected a list of {count}{_describe(args[0])} values, got {value!r}")
        return tuple(_check(name, args[0], v) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise SwiftFormerError(f"config {name}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise SwiftFormerError(f"config {name}: expected true or false, got {value!r}")
        return value
    if kind is float and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except (TypeError, ValueError):
            raise SwiftFormerError(f"config {name}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SwiftFormerError(f"config {name}: expected {_describe(kind)}, got {value!r}")
    return value


def check_range(name: str, value: Any, ranges: dict[str, str]) -> Any:
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


def check_choice(name: str, value: Any, choices: dict[str, tuple[str, ...]]) -> Any:
    """``value`` as its field's choice spells it (``AdamW`` -> ``adamw``, as timm reads it), or a
    :class:`SwiftFormerError` naming the key when it names none of them."""
    allowed = choices.get(name)
    if allowed is None or value is None:
        return value
    spelled = {choice.lower(): choice for choice in allowed}
    if str(value).lower() not in spelled:
        closest = difflib.get_close_matches(str(value).lower(), allowed, n=3)
        listed = (", ".join(allowed) if len(allowed) <= 12
                  else f"the {len(allowed)} names (closest: {', '.join(closest) or 'none'})")
        raise SwiftFormerError(f"config {name}: {value!r} is none of {listed}")
    return spelled[str(value).lower()]


def apply_overrides(config: R, overrides: dict[str, Any]) -> R:
    """A copy of ``config`` with ``overrides`` applied, each checked against its field's type, range and choices;
    unknown keys are an error naming them."""
    cls = type(config)
    overrides = {cls.renamed_keys.get(k, k): v for k, v in overrides.items()}
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SwiftFormerError(f"unknown config key(s): {', '.join(unknown)}")
    choices = cls.choices()
    return dataclasses.replace(config, **{
        k: check_choice(k, check_range(k, _check(k, hints[k], v), cls.ranges), choices) for k, v in overrides.items()
    })


def config_from_dict(cls: type[R], values: dict[str, Any], overrides: dict[str, Any] | None = None) -> R:
    """A ``cls`` from the defaults, ``values`` (e.g. a stored config), then ``overrides``."""
    return apply_overrides(cls(), {**values, **(overrides or {})})


def list_shipped(directory: Any) -> list[str]:
    """Names of the recipes shipped in ``directory`` (bases under ``_base_/`` are not listed)."""
    return sorted(p.name[: -len(".yaml")] for p in directory.iterdir() if p.name.endswith(".yaml"))


def _locate(name_or_path: str | Path, directory: Any, relative_to: Path | None = None) -> Any:
    """The file of a recipe: a YAML path (relative to the including file for a ``base:``) or a shipped name."""
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute() and path.suffix in (".yaml", ".yml"):
        path = relative_to / path
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SwiftFormerError(f"config file not found: {path}")
        return path
    shipped = directory / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise SwiftFormerError(
            f"unknown recipe {str(name_or_path)!r} (shipped: {', '.join(list_shipped(directory))}; or give a .yaml path)"
        )
    return shipped


def read_recipe(name_or_path: str | Path, directory: Any, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of a recipe with its ``base:`` chain resolved (the file's own values win)."""
    file = _locate(name_or_path, directory, Path(_chain[-1]).parent if _chain else None)
    if str(file) in _chain:
        raise SwiftFormerError(f"config {file}: base recipes form a cycle ({' -> '.join([*_chain, str(file)])})")
    values = parse_yaml(file.read_text(), f"config {file}") or {}
    if not isinstance(values, dict):
        raise SwiftFormerError(f"config {name_or_path}: expected a mapping of keys to values")
    base = values.pop(BASE_KEY, None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise SwiftFormerError(f"config {name_or_path}: {BASE_KEY} must name a recipe, got {base!r}")
    return {**read_recipe(base, directory, (*_chain, str(file))), **values}


def load_config(cls: type[R], name_or_path: str | Path, directory: Any, overrides: dict[str, Any] | None = None) -> R:
    """The ``cls`` of a shipped recipe (by name, from ``directory``) or a YAML file, then ``overrides``."""
    return config_from_dict(cls, read_recipe(name_or_path, directory), overrides)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "auto_augment=null"]`` -> ``{"lr": 0.001, "auto_augment": None}`` (values parsed as YAML)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SwiftFormerError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = parse_yaml(value, f"--set {item}")
    return overrides


def parse_yaml(text: str, where: str) -> Any:
    """The value ``text`` holds, or a :class:`SwiftFormerError` of one line: ``where``, then PyYAML's problem and
    its place (PyYAML's own message takes six lines and the traceback forty more)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        def at(mark: Any) -> str:
            return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""

        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        context = getattr(error, "context", None)
        opened = f"{context}{at(getattr(error, 'context_mark', None))}: " if context else ""
        raise SwiftFormerError(f"{where}: not valid YAML: {opened}{problem}{at(getattr(error, 'problem_mark', None))}") from None


def save_config(config: Recipe, path: str | Path) -> None:
    """Write the resolved config as YAML (every key, no ``base``: loadable again on its own)."""
    from .checkpoint import atomic_write

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))


# Classification ---------------------------------------------------------------------------------------------
def _configs_dir() -> Any:
    return resources.files("swiftformer") / "configs"


def list_recipes() -> list[str]:
    """Names of the classification recipes shipped in ``swiftformer/configs``."""
    return list_shipped(_configs_dir())


def recipe_text(name_or_path: str | Path) -> str:
    """The YAML text of a shipped recipe (by name) or of a file (by path), as written (``base:`` unresolved)."""
    return _locate(name_or_path, _configs_dir()).read_text()


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a recipe, then ``overrides`` (e.g. from the command line) on top."""
    return load_config(TrainConfig, name_or_path, _configs_dir(), overrides)
