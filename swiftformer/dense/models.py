"""Mask R-CNN / Faster R-CNN and semantic FPN on a SwiftFormer pyramid (the paper's Table 3 models).

The detectors are torchvision's own (``MaskRCNN``/``FasterRCNN``) with :class:`SwiftFormerFPN` as backbone,
so anchors, RoI heads, losses and post-processing are torchvision's defaults for an FPN. The semantic FPN
head is Kirillov et al., *Panoptic Feature Pyramid Networks* (CVPR 2019), as mmseg's ``FPNHead`` that
EfficientFormer and SwiftFormer trained on ADE20K.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN

from ..models.swiftformer import IMAGENET_MEAN, IMAGENET_STD
from .backbone import SwiftFormerFPN


def build_maskrcnn(
    variant: str,
    num_classes: int,
    pretrained_backbone: str | Path | None = None,
    masks: bool = True,
    out_channels: int = 256,
    min_size: int = 800,
    max_size: int = 1333,
    frozen_stages: int = 0,
    freeze_bn: bool = False,
    drop_path_rate: float = 0.0,
    **detector_kwargs,
) -> MaskRCNN | FasterRCNN:
    """torchvision Mask R-CNN (or Faster R-CNN with ``masks=False``) on a SwiftFormer FPN.

    Args:
        num_classes: object classes, background *excluded* (torchvision's count is ``num_classes + 1``).
        min_size, max_size: the detector resizes each image so its short side is ``min_size`` and its long
            side at most ``max_size`` (the 1× schedule's 1333×800).
        detector_kwargs: further ``MaskRCNN`` arguments (``box_detections_per_img``, ``rpn_*``, ...).
    """
    backbone = SwiftFormerFPN(
        variant, out_channels, pretrained_backbone, frozen_stages, freeze_bn, extra_pool=True,
        drop_path_rate=drop_path_rate,
    )
    detector = MaskRCNN if masks else FasterRCNN
    return detector(
        backbone,
        num_classes=num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        **detector_kwargs,
    )


class ScaleBranch(nn.Sequential):
    """One pyramid level of the semantic FPN: 3×3 conv + GN + ReLU (+ 2× upsample), until stride 4."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        layers: list[nn.Module] = []
        steps = max(1, int(math.log2(stride // 4)))  # stride 4: one conv, no upsampling
        for step in range(steps):
            layers += [
                nn.Conv2d(in_channels if step == 0 else channels, channels, 3, padding=1, bias=False),
                # GroupNorm as in Kirillov et al.: independent of the batch size (2-4 crops per GPU here).
                nn.GroupNorm(min(32, channels), channels),
                nn.ReLU(inplace=True),
            ]
            if stride > 4:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        super().__init__(*layers)


class SemanticFPN(nn.Module):
    """SwiftFormer FPN + semantic-FPN head: per-level branches summed at stride 4, 1×1 classifier, upsampled.

    ``forward`` returns logits at the input resolution, ``(B, num_classes, H, W)``.
    """

    def __init__(self, backbone: SwiftFormerFPN, num_classes: int, channels: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.branches = nn.ModuleList(ScaleBranch(backbone.out_channels, channels, s) for s in backbone.strides)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = list(self.backbone(images).values())
        size = features[0].shape[-2:]  # stride 4
        fused = sum(  # odd input sizes make 2× upsampling miss stride 4 by a pixel: resize to it exactly
            F.interpolate(out, size=size, mode="bilinear", align_corners=False) if out.shape[-2:] != size else out
            for out in (branch(f) for branch, f in zip(self.branches, features))
        )
        logits = self.classifier(self.dropout(fused))  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_semantic_fpn(
    variant: str,
    num_classes: int,
    pretrained_backbone: str | Path | None = None,
    out_channels: int = 256,
    channels: int = 128,
    dropout: float = 0.1,
    frozen_stages: int = 0,
    freeze_bn: bool = False,
    drop_path_rate: float = 0.0,
) -> SemanticFPN:
    """Semantic FPN (Kirillov et al.) on a SwiftFormer variant; ``num_classes`` includes background if labelled."""
    backbone = SwiftFormerFPN(
        variant, out_channels, pretrained_backbone, frozen_stages, freeze_bn, extra_pool=False,
        drop_path_rate=drop_path_rate,
    )
    return SemanticFPN(backbone, num_classes, channels, dropout)
