"""``create_model(name, pretrained=...)``: a model of the model package with weights read from a checkpoint.

The model package (:mod:`swiftformer.models`) builds networks and knows no file formats; this layer above
it reads weights of any format :mod:`swiftformer.checkpoint` understands (official, timm, Hugging Face,
native) into what it builds. Training's ``finetune`` and the inference commands load weights through it too.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .checkpoint import checkpoint_num_classes, load_native_state_dict, pretrained_source, read_weights
from .data_config import apply_carried_cfg
from .errors import CheckpointError
from .models import registry
from .models.swiftformer import SwiftFormer

log = logging.getLogger(__name__)


def create_model(
    name: str,
    pretrained: bool | str | Path | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> SwiftFormer:
    """Build a SwiftFormer variant (see :func:`swiftformer.list_models`), optionally with weights.

    Args:
        pretrained: ``True`` for the released ImageNet-1K weights (through the Hugging Face Hub cache),
            or a path to any checkpoint :func:`swiftformer.load_checkpoint` reads, or a training run's
            ``best.pth``/``last.pth``. A run of ours, or a file saved from one, sets the model's ``pretrained_cfg``
            to its image size, crop, interpolation and ``label_names``.
        num_classes: classifier size; ``None`` takes the checkpoint's (1000 without one). A ``num_classes``
            that differs from the checkpoint's (or a checkpoint without heads) keeps fresh heads (fine-tuning).
        kwargs: the builder's arguments (:func:`swiftformer.models.create_model`): ``attention`` (``additive``,
            ``additive_legacy``, ``mhsa``, ``transposed``, ``separable``), ``distillation``, ``drop_path_rate``,
            and further :class:`SwiftFormer` arguments (``drop_rate``, ``in_chans``, ``layer_scale_init``, ...).
    """
    if not pretrained:
        return registry.create_model(name, num_classes=1000 if num_classes is None else num_classes, **kwargs)
    variant = registry.resolve_variant(name)
    source = pretrained_source(variant, pretrained)
    state_dict, fmt, record = read_weights(source, attention=kwargs.get("attention"))
    if record is not None:  # our own file or run names its variant (it must be this one) and attention (the default)
        if record["variant"] != variant:
            raise CheckpointError(f"{source} holds a {record['variant']}, not a {variant}")
        if kwargs.get("attention") is None:
            kwargs["attention"] = record["attention"]
        elif kwargs["attention"] != record["attention"]:
            log.warning("%s was saved from a model with attention=%r; building attention=%r as asked",
                        source, record["attention"], kwargs["attention"])
    checkpoint_classes = checkpoint_num_classes(state_dict)
    fresh_head = num_classes is not None and checkpoint_classes != num_classes
    if num_classes is None:
        num_classes = checkpoint_classes or 1000
    model = registry.create_model(variant, num_classes=num_classes, **kwargs)
    load_native_state_dict(model, state_dict, drop_head=fresh_head)
    if record is not None:  # the run's preprocessing and class names: resolve_data_config(model) gives eval's
        apply_carried_cfg(model, record.get("pretrained_cfg"))
    log.info("weights from %s (%s format)%s", source, fmt, "; new classifier head" if fresh_head else "")
    return model
