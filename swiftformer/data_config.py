"""One pretrained/data config drives all preprocessing (mean, std, input size, crop, interpolation)."""
from __future__ import annotations

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

