"""SwiftFormer models, attentions and inference-time fusion."""
from .attention import ATTENTIONS, build_attention
from .fused import reparameterize
from .registry import create_model, list_models, resolve_variant
from .swiftformer import PUBLISHED_TOP1, VARIANTS, SwiftFormer

__all__ = [
    "ATTENTIONS", "PUBLISHED_TOP1", "VARIANTS", "SwiftFormer", "build_attention", "create_model", "list_models",
    "reparameterize", "resolve_variant",
]
