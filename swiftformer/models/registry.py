"""Model names, the builder and the ``create_model`` entry point."""
from __future__ import annotations

import difflib
from dataclasses import asdict
from typing import Any

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
    num_classes: int = 1000,
    distillation: bool = True,
    attention: str = "additive",
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> SwiftFormer:
    """Build a SwiftFormer variant (see :func:`list_models`) with fresh weights.

    Weights from a file or the Hub: :func:`swiftformer.create_model` (``pretrained=...``), the layer above
    this package that knows the checkpoint formats.

    Args:
        attention: token mixer of the SwiftFormer encoders: ``additive`` (default), ``additive_legacy``
            (pre-July-2023 weights, as in transformers), ``mhsa``, ``transposed`` or ``separable``.
        kwargs: further :class:`SwiftFormer` arguments (``drop_rate``, ``in_chans``, ``layer_scale_init``, ...).
    """
    variant = resolve_variant(name)
    model = SwiftFormer(
        num_classes=num_classes,
        distillation=distillation,
        attention=attention,
        drop_path_rate=drop_path_rate,
        **{**asdict(VARIANTS[variant]), **kwargs},
    )
    model.variant = variant
    return model
