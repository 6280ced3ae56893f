"""``swiftformer demo``: train SwiftFormer-XS on the embedded digits, evaluate it, print its accuracy."""
from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .numbers import positive_int

    parser.add_argument("--output-dir", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: the demo recipe's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..recipes import load_recipe
    from ..train import main

    overrides = {"output_dir": args.output_dir, "device": args.device, "progress": args.progress}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = load_recipe("demo_digits", overrides)
    print(f"training {config.model} on the scikit-learn digits ({config.epochs} epochs at {config.img_size}x{config.img_size}); "
          f"recipe: swiftformer/configs/demo_digits.yaml, run directory: {config.output_dir}")
    start = time.perf_counter()
    record = main(config).record
    minutes = (time.perf_counter() - start) / 60
    print(f"held-out digits ({record['val_count']} images): top-1: {record['val_top1']:.2f}  "
          f"top-5: {record['val_top5']:.2f}  EMA top-1: {record['ema_top1']:.2f}  ({minutes:.1f} min)")
    print(f"evaluate again: swiftformer eval --checkpoint {config.output_dir}/last.pth")
    return 0
