"""``swiftformer detect train|eval|predict``: Mask R-CNN / Faster R-CNN on a SwiftFormer FPN (COCO JSON data)."""
from __future__ import annotations

import argparse

from .dense import add_task_arguments, run_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, "detection", "maskrcnn_1x_swiftformer_l1")


def run(args: argparse.Namespace) -> int:
    return run_task(args, "detection")
