"""SwiftFormer + feature pyramid as a torchvision detection / segmentation backbone.

The four stage outputs (strides 4/8/16/32, the variant's widths) go through
``torchvision.ops.FeaturePyramidNetwork``; the result is an ``OrderedDict`` of ``out_channels``-wide maps
named ``"0"``-``"3"`` (plus ``"pool"``, stride 64, for the detectors' RPN), which is what
``torchvision.models.detection.MaskRCNN`` expects of a backbone with an ``out_channels`` attribute.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..checkpoint import HEAD_PREFIXES, read_native_state_dict
from ..errors import CheckpointError
from ..models import SwiftFormer, create_model

log = logging.getLogger(__name__)

# Classification-only parameters: the heads and the BN after the last stage (the pyramid reads raw stage outputs).
UNUSED_PREFIXES = (*HEAD_PREFIXES, "norm.")


def load_backbone_weights(body: SwiftFormer, path: str | Path) -> list[str]:
    """Load classification weights of any format the model core reads; returns the keys not used.

    Heads and the final BN are dropped (and reported); every other tensor must fit, else a :class:`CheckpointError`.
    """
    state_dict, fmt, _ = read_native_state_dict(path)
    dropped = sorted(k for k in state_dict if k.startswith(UNUSED_PREFIXES))
    state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    expected = body.state_dict()
    wrong = [k for k, v in state_dict.items() if k in expected and expected[k].shape != v.shape]
    if wrong:
        raise CheckpointError(
            f"{path} does not fit this backbone: {wrong[0]} is {tuple(state_dict[wrong[0]].shape)} in the checkpoint, "
            f"{tuple(expected[wrong[0]].shape)} in the model - is it another SwiftFormer variant?"
        )
    result = body.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} ({fmt} layout) does not match the backbone: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    log.info("backbone weights from %s (%s layout); not used: %s", path, fmt, ", ".join(dropped) or "nothing")
    return dropped


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` by ``FrozenBatchNorm2d`` with the same statistics and affine parameters.

    The usual choice when fine-tuning a detector with a few images per GPU: batch statistics of 2 images are noise.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


class SwiftFormerFPN(nn.Module):
    """SwiftFormer stages + ``FeaturePyramidNetwork``; ``out_channels`` tells torchvision the pyramid width.

    Args:
        variant: a SwiftFormer variant (``swiftformer_xs`` ... ``swiftformer_l3``).
        out_channels: width of every pyramid level (256 in Mask R-CNN and semantic FPN).
        pretrained: classification checkpoint (official, timm, Hugging Face or native); heads are dropped.
        frozen_stages: 0 trains everything; k >= 1 freezes the stem and the first k stages.
        freeze_bn: replace the backbone's BatchNorm by frozen BatchNorm (for fine-tuning with small batches).
        extra_pool: add the stride-64 ``"pool"`` level that torchvision's RPN anchors expect.
        kwargs: further :func:`swiftformer.create_model` arguments (``drop_path_rate``, ``attention``, ...).
    """

    def __init__(
        self,
        variant: str = "swiftformer_xs",
        out_channels: int = 256,
        pretrained: str | Path | None = None,
        frozen_stages: int = 0,
        freeze_bn: bool = False,
        extra_pool: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        body = create_model(variant, num_classes=0, distillation=False, **kwargs)
        # Unused in dense prediction; leaving trainable parameters without gradients would break DDP.
        body.norm, body.head = nn.Identity(), nn.Identity()
        self.dropped_keys = load_backbone_weights(body, pretrained) if pretrained else []
        if not 0 <= frozen_stages <= len(body.stages):
            raise ValueError(f"frozen_stages must be in 0..{len(body.stages)}, got {frozen_stages}")
        if frozen_stages:
            for module in (body.stem, *body.stages[:frozen_stages]):
                module.requires_grad_(False)
        self.body = freeze_batch_norm(body) if freeze_bn else body
        self.frozen_stages = frozen_stages
        in_channels = [info["num_chs"] for info in body.feature_info]
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels
        self.strides = [info["reduction"] for info in body.feature_info] + ([64] if extra_pool else [])

    def train(self, mode: bool = True) -> SwiftFormerFPN:
        """Frozen stages stay in eval mode, so their BatchNorm statistics do not drift."""
        super().train(mode)
        for module in (self.body.stem, *self.body.stages[: self.frozen_stages]) if self.frozen_stages else ():
            module.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.body.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``{"0": (B, C, H/4, W/4), ..., "3": (B, C, H/32, W/32)[, "pool": H/64]}``."""
        stages = self.body.forward_intermediates(x, intermediates_only=True)
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(stages)))
