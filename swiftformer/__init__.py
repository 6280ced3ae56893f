"""SwiftFormer: train, evaluate, fuse, export and benchmark the SwiftFormer family (ICCV 2023)."""
from .checkpoint import load_checkpoint, save_checkpoint
from .data_config import resolve_data_config
from .errors import CheckpointError, DataError, SwiftFormerError, UnknownModelError
from .models import ATTENTIONS, VARIANTS, SwiftFormer, list_models, reparameterize
from .pretrained import create_model

__version__ = "0.1.0"

__all__ = [
    "ATTENTIONS", "VARIANTS", "CheckpointError", "DataError", "SwiftFormer", "SwiftFormerError",
    "UnknownModelError", "create_model", "list_models", "load_checkpoint", "reparameterize",
    "resolve_data_config", "save_checkpoint",
]
