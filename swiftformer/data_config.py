"""One pretrained/data config drives all preprocessing (mean, std, input size, crop, interpolation).

A model trained by us carries its run's preprocessing and class names in its ``pretrained_cfg`` (timm's place for
them), so ``resolve_data_config(model)`` gives the transform ``swiftformer eval`` uses and
``model.pretrained_cfg["label_names"]`` names the classes; every checkpoint we write stores that part of the cfg.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from timm.data import resolve_data_config as timm_resolve_data_config
from torch import nn

from .errors import SwiftFormerError
from .models.swiftformer import default_pretrained_cfg

# SwiftFormer downsamples 32x (stem 4x, three 2x downsamplings): a smaller side leaves the last stage with less
# than one pixel of image, all padding. Any size from 32 up works; multiples of 32 waste no padding.
MIN_IMAGE_SIZE = 32
# the resampling filters timm's transforms take by name (PIL's)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
# the pretrained_cfg entries a checkpoint carries: what preprocessing needs, and the class names
CARRIED_KEYS = ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "label_names")


def check_image_size(*sides: int) -> None:
    """A :class:`SwiftFormerError` for an image side the model cannot take (not an integer >= 32)."""
    for side in sides:
        if isinstance(side, bool) or not isinstance(side, int) or side < MIN_IMAGE_SIZE:
            raise SwiftFormerError(
                f"image size {side!r} is too small: SwiftFormer downsamples 32x, so every side must be at least "
                f"{MIN_IMAGE_SIZE} pixels (e.g. --img-size 224)"
            )


def resolve_data_config(model: nn.Module | None = None, img_size: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The model's preprocessing config (timm's ``resolve_data_config``), optionally at another size.

    Without a model, the SwiftFormer family's own (every variant shares it): building the data of a run
    needs no model.
    """
    args = dict(overrides)
    if img_size is not None:
        check_image_size(img_size)
        args["input_size"] = (3, img_size, img_size)
    pretrained_cfg = default_pretrained_cfg() if model is None else None
    return timm_resolve_data_config(args, pretrained_cfg=pretrained_cfg, model=model)


def carried_cfg(model: nn.Module) -> dict[str, Any]:
    """The part of ``model.pretrained_cfg`` a checkpoint stores (:data:`CARRIED_KEYS`), as plain JSON values."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {key: list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key] for key in CARRIED_KEYS if key in cfg}


def run_cfg(config: Mapping[str, Any], class_names: Sequence[str] | None) -> dict[str, Any]:
    """What a training run's config (``TrainConfig.to_dict()``) and class names set in a pretrained_cfg: the image
    size, crop and interpolation ``eval`` takes from the run, and the labels."""
    cfg: dict[str, Any] = {key: config[key] for key in ("crop_pct", "interpolation") if config.get(key) is not None}
    if config.get("img_size"):
        cfg["input_size"] = [3, config["img_size"], config["img_size"]]
    if class_names:
        cfg["label_names"] = list(class_names)
    return cfg


def apply_carried_cfg(model: nn.Module, carried: Mapping[str, Any] | str | None) -> nn.Module:
    """``model`` with ``carried`` (:func:`carried_cfg`, or its JSON) over its pretrained_cfg; class names that do
    not fit its head (fine-tuning with another ``num_classes``) are left out."""
    if isinstance(carried, str):
        carried = json.loads(carried)
    cfg = {key: tuple(value) if isinstance(value, list) and key != "label_names" else value
           for key, value in (carried or {}).items() if key in CARRIED_KEYS}
    if len(cfg.get("label_names") or ()) != getattr(model, "num_classes", None):
        cfg.pop("label_names", None)
    base = {key: value for key, value in model.pretrained_cfg.items() if key != "label_names"}
    model.pretrained_cfg = {**base, **cfg}
    return model


def preprocessing_settings(model: nn.Module) -> dict[str, Any]:
    """The run settings (``img_size``, ``crop_pct``, ``interpolation``) that reproduce ``model``'s pretrained_cfg:
    what ``eval`` of a file carrying no run config preprocesses with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    settings = {key: cfg[key] for key in ("crop_pct", "interpolation") if cfg.get(key) is not None}
    height, width = tuple(cfg.get("input_size", (3, 224, 224)))[1:]
    if height == width:
        settings["img_size"] = height
    return settings
