"""``swiftformer train``: train or fine-tune with a recipe (``--config``) and command-line overrides."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..distributed import DIST_TIMEOUT_SECONDS
from .numbers import image_side, non_negative_int, positive_float, positive_int, workers

# flag -> TrainConfig field; only flags the user gives override the recipe
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--model": ("model", {"help": "variant (default: the recipe's)"}),
    "--data": ("data", {"help": "dataset folder: DIR/train and DIR/val (ImageNet layout), or the CIFAR-10 root"}),
    "--dataset": ("dataset", {"choices": ("folder", "digits", "cifar10"), "help": "data source (default: folder)"}),
    "--epochs": ("epochs", {"type": positive_int}),
    "--batch-size": ("batch_size", {"type": positive_int, "help": "per process"}),
    "--accum-steps": ("accum_steps", {"type": positive_int, "help": "micro-batches per optimizer update"}),
    "--img-size": ("img_size", {"type": image_side}),
    "--lr": ("lr", {"type": positive_float}),
    "--output-dir": ("output_dir", {"help": "run directory (config.yaml, log.jsonl, last.pth, best.pth, curves.png); "
                                    "with --resume default: the checkpoint's folder"}),
    "--resume": ("resume", {"metavar": "CKPT", "help": "continue a run from its last.pth, writing beside it"}),
    "--finetune": ("finetune", {"metavar": "CKPT", "help": "start from these weights (official, timm, HF or ours)"}),
    "--num-classes": ("num_classes", {"type": positive_int, "help": "must equal the data's class count (default: taken from the data)"}),
    "--device": ("device", {"help": "auto, cpu, cuda"}),
    "--dist-timeout": ("dist_timeout", {"type": positive_float, "metavar": "SECONDS",
                                        "help": f"fail when other processes stay silent this long (default {DIST_TIMEOUT_SECONDS:g})"}),
    "--amp": ("amp", {"choices": ("none", "bf16", "fp16"), "help": "mixed precision"}),
    "--workers": ("workers", {"type": workers, "help": "data-loading processes per training process"}),
    "--seed": ("seed", {"type": non_negative_int}),
    "--stop-after": ("stop_after", {"type": positive_int, "metavar": "N", "help": "leave after N epochs (job time limits); --resume goes on"}),
    "--distillation": ("distillation", {"choices": ("none", "soft", "hard")}),
    "--teacher": ("teacher", {"help": "teacher model: any timm name or a SwiftFormer variant"}),
    "--teacher-checkpoint": ("teacher_checkpoint", {"metavar": "CKPT"}),
}
SWITCHES = {
    "--download": ("download", "fetch CIFAR-10 through torchvision"),
    "--skip-bad-images": ("skip_bad_images", "leave unreadable images out (each logged, counted per epoch) instead of stopping"),
    "--channels-last": ("channels_last", "channels-last memory format: 1x1 convolutions as GEMMs (default: on)"),
    "--compile": ("compile", "torch.compile the training model"),
    "--qat": ("qat", "quantization-aware fine-tuning of --finetune's weights for int8 export: the fused model "
                     "through int8 fake quantization, distilled from the float model (val top-1 is the simulated "
                     "int8 model's); take a small --lr (1e-5) and 1-2 --epochs"),
    "--grad-checkpointing": ("grad_checkpointing", "recompute activations in backward to save memory"),
    "--tensorboard": ("tensorboard", "also write TensorBoard scalars to RUN/tensorboard"),
    "--progress": ("progress", "progress bars (default: on)"),
    "--overwrite": ("overwrite", "replace the run already in --output-dir (default: refuse)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="recipe name (swiftformer_xs, ..., demo_digits) or YAML path; "
                        "default: the --model's recipe, or the checkpoint's config with --resume")
    for flag, (dest, options) in FLAGS.items():
        parser.add_argument(flag, dest=dest, default=None, **options)
    for flag, (dest, help_text) in SWITCHES.items():
        parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe key, e.g. --set mixup=0.8 --set auto_augment=null (repeatable)")


def resolve_config(args: argparse.Namespace):
    """The recipe, then every flag the user gave, then ``--set`` pairs."""
    from ..recipes import apply_overrides, load_recipe, parse_set
    from ..train import read_training_checkpoint

    overrides = {dest: getattr(args, dest) for dest, _ in [*FLAGS.values(), *SWITCHES.values()] if getattr(args, dest) is not None}
    overrides.update(parse_set(args.set))
    if args.resume and "output_dir" not in overrides:  # a resumed run goes on beside its checkpoint (also a copied one)
        overrides["output_dir"] = str(Path(args.resume).absolute().parent)
    if args.config is None and args.resume:  # the run's own resolved config, complete: any recipe is a base
        saved = read_training_checkpoint(args.resume)["config"]
        return apply_overrides(load_recipe("swiftformer_xs"), {**saved, **overrides})
    from ..models.registry import resolve_variant

    recipe = args.config or resolve_variant(overrides.get("model") or "swiftformer_xs")
    return load_recipe(recipe, overrides)


def run(args: argparse.Namespace) -> int:
    from ..recipes import parse_set
    from ..rundir import RunInterrupted
    from ..train import main

    config = resolve_config(args)
    asked = {dest for dest, _ in [*FLAGS.values(), *SWITCHES.values()] if getattr(args, dest) is not None}
    asked |= set(parse_set(args.set))
    try:
        result = main(config, asked)  # a read-only --output-dir, or a file there, fails before any training work
    except RunInterrupted as interrupted:
        print(f"swiftformer train: {interrupted}", file=sys.stderr)
        return 130
    record = result.record
    if result.is_main and "val_top1" in record:
        ema = f"  EMA top-1: {record['ema_top1']:.2f}" if "ema_top1" in record else ""
        print(f"top-1: {record['val_top1']:.2f}  top-5: {record['val_top5']:.2f}{ema}")
    return 0
