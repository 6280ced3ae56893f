"""One pretrained/data config drives all preprocessing (mean, std, input size, crop, interpolation)."""
from __future__ import annotations

from typing import Any

from timm.data import create_transform, resolve_data_config as timm_resolve_data_config
from torch import nn


def resolve_data_config(model: nn.Module, img_size: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The model's preprocessing config (timm's ``resolve_data_config``), optionally at another size."""
    args = dict(overrides)
    if img_size is not None:
        args["input_size"] = (3, img_size, img_size)
    return timm_resolve_data_config(args, model=model)


def eval_transform(model: nn.Module, img_size: int | None = None):
    """Resize + center crop + normalise, exactly as the model's config says."""
    return create_transform(**resolve_data_config(model, img_size), is_training=False)
