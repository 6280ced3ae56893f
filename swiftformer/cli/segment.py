"""``swiftformer segment train|eval|predict``: semantic FPN on a SwiftFormer backbone (image / label-PNG folders)."""
from __future__ import annotations

import argparse

from .dense import add_task_arguments, run_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, "segmentation", "semantic_fpn_ade20k_swiftformer_l1")


def run(args: argparse.Namespace) -> int:
    return run_task(args, "segmentation")
