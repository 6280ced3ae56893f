"""Dense prediction with SwiftFormer backbones: Mask R-CNN (torchvision) and semantic FPN (the paper's Table 3)."""
from .backbone import SwiftFormerFPN, freeze_batch_norm, load_backbone_weights
from .models import SemanticFPN, build_maskrcnn, build_semantic_fpn

__all__ = ["SemanticFPN", "SwiftFormerFPN", "build_maskrcnn", "build_semantic_fpn", "freeze_batch_norm", "load_backbone_weights"]
