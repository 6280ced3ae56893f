"""SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile Vision Applications.

Shaker, Maaz, Rasheed, Khan, Yang, Khan — ICCV 2023, arXiv:2303.15446.
Reference code: github.com/Amshaker/SwiftFormer (current weights, July 2023 attention fix).

The network is a 4-stage hierarchy (strides 4/8/16/32). Each stage is ``ConvEncoder`` blocks followed by one
``SwiftFormerEncoder`` (local representation, additive attention, MLP). Parameter names follow timm's
``swiftformer.py``, so timm checkpoints load as they are; :mod:`swiftformer.convert` maps the official and
Hugging Face layouts. Every block owns its inference-time fusion in ``reparameterize()`` and
:func:`swiftformer.models.fused.reparameterize` walks the model once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import build_attention
from .fused import (
    FusedConvEncoder, FusedDownsample, FusedHead, FusedStem, FusedSwiftFormerEncoder, TokenScale, average_linears,
    conv1x1_to_linear, fold_bn_after_conv, fold_bn_before_linear, fold_output_scale, reparameterize_children,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SwiftFormerConfig:
    """What distinguishes one variant from another."""

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-5


VARIANTS: dict[str, SwiftFormerConfig] = {
    "swiftformer_xs": SwiftFormerConfig(depths=(3, 3, 6, 4), widths=(48, 56, 112, 220)),
    "swiftformer_s": SwiftFormerConfig(depths=(3, 3, 9, 6), widths=(48, 64, 168, 224)),
    "swiftformer_l1": SwiftFormerConfig(depths=(4, 3, 10, 5), widths=(48, 96, 192, 384)),
    "swiftformer_l3": SwiftFormerConfig(depths=(4, 4, 12, 6), widths=(64, 128, 320, 512)),
}

# Published ImageNet-1K top-1 of the released (distilled, 300-epoch) weights, from the paper's Table 2.
PUBLISHED_TOP1 = {"swiftformer_xs": 75.7, "swiftformer_s": 78.5, "swiftformer_l1": 80.9, "swiftformer_l3": 83.0}


def default_pretrained_cfg(num_classes: int = 1000) -> dict[str, Any]:
    """Preprocessing of the official recipe; timm's ``resolve_data_config`` reads it from the model.

    ``crop_pct`` 0.875 is the crop the official evaluation used for the published accuracy.
    """
    return {
        "num_classes": num_classes,
        "input_size": (3, 224, 224),
        "crop_pct": 0.875,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": "stem.0",
        "classifier": ("head", "head_dist"),
    }


class LayerScale2d(nn.Module):
    """Learned per-channel scale of a residual branch, ``(C, 1, 1)``."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a map is strictly channels-last, so that its ``(B, H, W, C)`` view is contiguous."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def elementwise(fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for an elementwise ``fn``, on the contiguous ``(B, H, W, C)`` view of a channels-last map.

    PyTorch's CPU GELU (forward and backward) runs ~1.7x slower on channels-last strides than on the same
    memory seen as contiguous; the values are the same either way.
    """
    if not is_channels_last(x):
        return fn(x)
    return fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PointwiseConv2d(nn.Conv2d):
    """1×1 convolution that runs as one matrix product over the channel axis on channels-last maps.

    Same parameters and result as ``nn.Conv2d(in, out, 1)``. On a channels-last map the ``(B, H, W, C)``
    view is contiguous, so the convolution is ``F.linear`` on it: one GEMM forward and two backward, faster
    here than oneDNN's 1×1 convolution on the same maps (README, "Training throughput"). Contiguous NCHW maps
    take the convolution.
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(in_chans, out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_channels_last(x):
            return super().forward(x)
        return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)


def drop_path_or_identity(rate: float) -> nn.Module:
    """Stochastic depth (timm's ``DropPath``: the whole residual branch per sample while training)."""
    return DropPath(rate) if rate > 0 else nn.Identity()


class Stem(nn.Sequential):
    """Two stride-2 3×3 conv + BN + ReLU: ``(B, 3, H, W) -> (B, C, H/4, W/4)``."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(out_chans // 2),
            nn.ReLU(),
            nn.Conv2d(out_chans // 2, out_chans, 3, stride=2, padding=1),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(),
        )

    def reparameterize(self) -> nn.Module:
        return FusedStem(fold_bn_after_conv(self[0], self[1]), fold_bn_after_conv(self[3], self[4]))


class Downsample(nn.Module):
    """3×3 stride-2 conv + BN between stages."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def reparameterize(self) -> nn.Module:
        return FusedDownsample(fold_bn_after_conv(self.proj, self.norm))


class ConvEncoder(nn.Module):
    """Residual depthwise 3×3 conv + BN, then a 1×1-conv MLP with GELU, scaled per channel.

    Used both as the ConvEncoder block (hidden = 4·C, layer scale 1) and as the SwiftFormer encoder's
    local representation (hidden = C).
    """

    def __init__(self, dim: int, hidden_dim: int, drop_path: float = 0.0, layer_scale_init: float = 1.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = PointwiseConv2d(dim, hidden_dim)
        self.act = nn.GELU()
        self.pwconv2 = PointwiseConv2d(hidden_dim, dim)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.pwconv2(elementwise(self.act, self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.drop_path(self.layer_scale(branch))

    def reparameterize(self) -> nn.Module:
        return FusedConvEncoder(
            fold_bn_after_conv(self.dwconv, self.norm),
            conv1x1_to_linear(self.pwconv1),
            conv1x1_to_linear(fold_output_scale(self.pwconv2, self.layer_scale.gamma)),
        )


class Mlp(nn.Module):
    """BN, then a 1×1-conv MLP with GELU."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.fc1 = PointwiseConv2d(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = PointwiseConv2d(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(elementwise(self.act, self.fc1(self.norm1(x))))))


class SwiftFormerEncoder(nn.Module):
    """Local representation, then token mixing and an MLP, each a residual branch with layer scale."""

    def __init__(
        self,
        dim: int,
        attention: str = "additive",
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__()
        self.local_representation = ConvEncoder(dim, dim)
        self.attn = build_attention(attention, dim)
        self.linear = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = LayerScale2d(dim, layer_scale_init)
        self.layer_scale_2 = LayerScale2d(dim, layer_scale_init)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        mixed = self.attn(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        x = x + self.drop_path(self.layer_scale_1(mixed))
        return x + self.drop_path(self.layer_scale_2(self.linear(x)))

    def reparameterize(self) -> nn.Module:
        gamma_1 = self.layer_scale_1.gamma.reshape(-1)
        if hasattr(self.attn, "reparameterize"):
            attn = self.attn.reparameterize(gamma_1)
        else:  # the comparison attentions have no fused form: keep them, scale their output
            attn = nn.Sequential(self.attn, TokenScale(gamma_1))
        return FusedSwiftFormerEncoder(
            self.local_representation.reparameterize(),
            attn,
            fold_bn_before_linear(self.linear.norm1, conv1x1_to_linear(self.linear.fc1)),
            conv1x1_to_linear(fold_output_scale(self.linear.fc2, self.layer_scale_2.gamma)),
        )


class Stage(nn.Module):
    """Optional downsampling, then ConvEncoders and one SwiftFormerEncoder at the end."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        downsample: bool,
        attention: str,
        mlp_ratio: float,
        drop_rate: float,
        drop_path_rates: list[float],
        layer_scale_init: float,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        blocks: list[nn.Module] = [
            ConvEncoder(dim, int(mlp_ratio * dim), drop_path=drop_path_rates[i]) for i in range(depth - 1)
        ]
        blocks.append(
            SwiftFormerEncoder(dim, attention, mlp_ratio, drop_rate, drop_path_rates[-1], layer_scale_init)
        )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


class SwiftFormer(nn.Module):
    """SwiftFormer classifier with the timm model API.

    ``forward`` returns the logits, the mean of the class and distillation heads; with
    :meth:`set_distilled_training` it returns ``(class_logits, distillation_logits)`` while training.
    """

    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 6, 4),
        widths: tuple[int, ...] = (48, 56, 112, 220),
        num_classes: int = 1000,
        distillation: bool = True,
        attention: str = "additive",
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.attention = attention
        self.distilled_training = False
        self.stem = Stem(in_chans, widths[0])
        total_blocks = sum(depths)
        rates = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        stages, in_dim, first_block = [], widths[0], 0
        for index, (depth, dim) in enumerate(zip(depths, widths)):
            stages.append(
                Stage(
                    in_dim, dim, depth, index > 0, attention, mlp_ratio, drop_rate,
                    rates[first_block : first_block + depth], layer_scale_init,
                )
            )
            in_dim, first_block = dim, first_block + depth
        self.stages = nn.Sequential(*stages)
        self.feature_info = [
            {"num_chs": dim, "reduction": 2 ** (index + 2), "module": f"stages.{index}"} for index, dim in enumerate(widths)
        ]
        self.num_features = widths[-1]
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._classifier(num_classes)
        self.head_dist = self._classifier(num_classes) if distillation else None
        self.pretrained_cfg = default_pretrained_cfg(num_classes)
        self.apply(_init_weights)

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    # timm API -------------------------------------------------------------------------------------
    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    def get_classifier(self) -> tuple[nn.Module, nn.Module | None]:
        return self.head, self.head_dist

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised head(s) for ``num_classes`` (0 gives pooled features)."""
        self.num_classes = num_classes
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}
        self.head = self._classifier(num_classes)
        if self.head_dist is not None:
            self.head_dist = self._classifier(num_classes)
        for head in (self.head, self.head_dist):
            if head is not None:
                head.apply(_init_weights)

    def set_distilled_training(self, enable: bool = True) -> None:
        if enable and self.head_dist is None:
            raise ValueError("this model was built with distillation=False: it has no distillation head")
        self.distilled_training = enable

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return set()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise decay (timm's convention): ``coarse`` one per stage, else one per block.

        A stage's downsampling goes with its first block; the final norm and the heads come last.
        """
        if coarse:
            blocks: list[tuple[str, tuple[int, ...] | None]] = [(r"^stages\.(\d+)", None)]
        else:
            blocks = [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)]
        return {"stem": r"^stem", "blocks": [*blocks, (r"^norm", (99999,))]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (strides 4/8/16/32). ``indices``: the last n stages if int, else stage indices."""
        take = _stage_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        last = len(self.stages) - 1
        stages = self.stages[: max(take) + 1] if stop_early or intermediates_only else self.stages
        for index, stage in enumerate(stages):
            x = stage(x)
            if index in take:
                intermediates.append(self.norm(x) if norm and index == last else x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.head_drop(x.mean(dim=(2, 3)))
        if pre_logits:
            return x
        logits = self.head(x)
        if self.head_dist is None:
            return logits
        logits_dist = self.head_dist(x)
        if self.distilled_training and self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def reparameterize(self) -> nn.Module:
        """Inference form: fused stem and stages, then :class:`FusedHead`."""
        return nn.Sequential(self.stem.reparameterize(), reparameterize_children(self.stages), self._fused_head())

    def _fused_head(self) -> FusedHead:
        """The final BN and the twin heads as one linear layer on pooled features."""
        if not isinstance(self.head, nn.Linear):
            raise ValueError("a model without a classifier (num_classes=0) has no head to fuse")
        heads = [h for h in (self.head, self.head_dist) if h is not None]
        return FusedHead(fold_bn_before_linear(self.norm, average_linears(heads)))


def _stage_indices(num_stages: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"cannot take the last {indices} of {num_stages} stages")
        return list(range(num_stages - indices, num_stages))
    take = [i + num_stages if i < 0 else i for i in indices]
    if any(not 0 <= i < num_stages for i in take):
        raise ValueError(f"stage indices {list(indices)} out of range for {num_stages} stages")
    return take


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
