"""SwiftFormer: train, evaluate, fuse, export and benchmark the SwiftFormer family (ICCV 2023).

The names below are imported on first use, so that ``swiftformer.cli`` starts without torch: the command line
sets up the process (``OMP_WAIT_POLICY``) before torch loads OpenMP.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "resolve_data_config": "data_config",
    "CheckpointError": "errors", "DataError": "errors", "SwiftFormerError": "errors", "UnknownModelError": "errors",
    "ATTENTIONS": "models", "VARIANTS": "models", "SwiftFormer": "models", "list_models": "models",
    "reparameterize": "models", "create_model": "pretrained",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .data_config import resolve_data_config
    from .errors import CheckpointError, DataError, SwiftFormerError, UnknownModelError
    from .models import ATTENTIONS, VARIANTS, SwiftFormer, list_models, reparameterize
    from .pretrained import create_model


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'swiftformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
