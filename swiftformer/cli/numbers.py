"""argparse ``type=`` functions shared by every sub-command: a bad number is refused before any work starts.

Each raises :class:`argparse.ArgumentTypeError` with the reason, so the parser prints one line naming the option
and the value (``swiftformer train: error: argument --epochs: must be a positive integer, got 0``).
"""
from __future__ import annotations

import argparse
import math

MAX_IMAGE_SIDE = 8192  # larger inputs exhaust memory before they can help a 32x-downsampling classifier
MAX_WORKERS = 1024  # data-loading processes; more would exhaust the machine's process table


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def workers(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WORKERS} data-loading processes, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def probability(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def image_side(text: str) -> int:
    """A side length the model can take (:func:`swiftformer.data_config.check_image_size`)."""
    from ..data_config import check_image_size
    from ..errors import SwiftFormerError

    value = _integer(text)
    try:
        check_image_size(value)
    except SwiftFormerError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"image size {value} is too large (at most {MAX_IMAGE_SIDE} pixels a side)")
    return value
