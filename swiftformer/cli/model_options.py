"""The options that say which weights ``eval`` and ``predict`` run: one spelling and one help text for both."""
from __future__ import annotations

import argparse


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--model``, ``--attention`` and ``--ema``."""
    from ..models.attention import ATTENTIONS

    parser.add_argument("--checkpoint", default=None, help="our last.pth/best.pth, an exported artefact (.onnx, .xml, "
                        ".pt, .pte, .tflite), or official/timm/HF weights (default: the released ImageNet weights "
                        "of --model)")
    parser.add_argument("--model", default=None, help="variant, for checkpoints that are not our training runs")
    parser.add_argument("--attention", choices=ATTENTIONS, default="additive", help="token mixer the weights were "
                        "trained with, for checkpoints that are not our runs (additive_legacy: transformers' weights)")
    parser.add_argument("--ema", action="store_true", help="the EMA weights of a training checkpoint")
