"""Model names, the builder and the ``create_model`` entry point."""
from __future__ import annotations

import difflib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..checkpoint import checkpoint_num_classes, load_native_state_dict, pretrained_source, read_native_state_dict
from ..errors import UnknownModelError
from .swiftformer import VARIANTS, SwiftFormer


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(VARIANTS)


def resolve_variant(name: str) -> str:
    """Canonical variant name; accepts ``timm/`` prefixes, ``.tag`` suffixes, and official spellings (``SwiftFormer_XS``)."""
    base = name.split("/")[-1].split(".")[0].lower()
    if base in VARIANTS:
        return base
    close = difflib.get_close_matches(base, list(VARIANTS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (available: {', '.join(list_models())})")


def create_model(
    name: str,
    pretrained: bool | str | Path | None = None,
    num_classes: int | None = None,
    distillation: bool = True,
    attention: str = "additive",
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> SwiftFormer:
    """Build a SwiftFormer variant (see :func:`list_models`).

    Args:
        pretrained: ``True`` for the released ImageNet-1K weights (through the Hugging Face Hub cache),
            or a path to any checkpoint :func:`swiftformer.load_checkpoint` reads.
        num_classes: classifier size; ``None`` takes the checkpoint's (1000 without one). A ``num_classes``
            that differs from the checkpoint's drops its heads and keeps fresh ones (fine-tuning).
        attention: token mixer of the SwiftFormer encoders: ``additive`` (default), ``additive_legacy``
            (pre-July-2023 weights, as in transformers), ``mhsa``, ``transposed`` or ``separable``.
        kwargs: further :class:`SwiftFormer` arguments (``drop_rate``, ``in_chans``, ``layer_scale_init``, ...).
    """
    variant = resolve_variant(name)
    config = {**asdict(VARIANTS[variant]), **kwargs}
    state_dict, checkpoint_classes = None, None
    if pretrained:
        source = pretrained_source(variant, pretrained)
        state_dict, _, _ = read_native_state_dict(source, attention=attention)
        checkpoint_classes = checkpoint_num_classes(state_dict)
    if num_classes is None:
        num_classes = checkpoint_classes or 1000
    model = SwiftFormer(
        num_classes=num_classes,
        distillation=distillation,
        attention=attention,
        drop_path_rate=drop_path_rate,
        **config,
    )
    model.variant = variant
    if state_dict is not None:
        drop_head = checkpoint_classes is not None and checkpoint_classes != num_classes
        load_native_state_dict(model, state_dict, drop_head=drop_head)
    return model
