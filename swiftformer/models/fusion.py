"""Inference-time fusion: fold BatchNorm and layer scales into neighbouring convolutions.

Each block owns its fusion in a ``reparameterize()`` method; :func:`reparameterize` deep-copies the model
and walks it once, replacing every module that has one by what it returns.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .fused import set_layout


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``x * scale + shift``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True,
    )
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)


@torch.no_grad()
def fold_bn_after_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one conv."""
    scale, shift = _bn_affine(bn)
    return _conv_like(conv, conv.weight * scale[:, None, None, None], _bias(conv) * scale + shift)


@torch.no_grad()
def fold_bn_before_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(bn(x))`` as one conv; only exact for a 1×1 conv without padding (BN shift is spatially constant)."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("BN can only be folded into a following dense 1x1 conv")
    scale, shift = _bn_affine(bn)
    weight = conv.weight * scale[None, :, None, None]
    bias = _bias(conv) + conv.weight[:, :, 0, 0] @ shift
    return _conv_like(conv, weight, bias)


@torch.no_grad()
def fold_output_scale(conv: nn.Conv2d, scale: torch.Tensor) -> nn.Conv2d:
    """``conv(x) * scale`` (per output channel) as one conv."""
    scale = scale.reshape(-1)
    return _conv_like(conv, conv.weight * scale[:, None, None, None], _bias(conv) * scale)


@torch.no_grad()
def conv1x1_to_linear(conv: nn.Conv2d) -> nn.Linear:
    """A dense 1×1 conv as the equivalent linear layer over channels."""
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.stride != (1, 1) or conv.padding != (0, 0):
        raise ValueError("only a dense, stride-1, unpadded 1x1 conv is a linear layer")
    linear = nn.Linear(conv.in_channels, conv.out_channels)
    linear.weight.copy_(conv.weight[:, :, 0, 0])
    linear.bias.copy_(_bias(conv))
    return linear


def reparameterize_children(module: nn.Module) -> nn.Module:
    """``module`` with every module in it that has ``reparameterize()`` replaced by its result."""
    if hasattr(module, "reparameterize"):
        return module.reparameterize()
    for name, child in module.named_children():
        setattr(module, name, reparameterize_children(child))
    return module


class FusedModel(nn.Module):
    """A reparameterized network: same input and output as the model it came from, fewer ops."""

    def __init__(self, body: nn.Module, pretrained_cfg: dict) -> None:
        super().__init__()
        self.body = body
        self.pretrained_cfg = pretrained_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@torch.no_grad()
def reparameterize(model: nn.Module, channels_last: bool = True) -> FusedModel:
    """A fused copy of ``model`` for inference: same outputs as ``model.eval()``, fewer ops.

    BN is folded into its conv/linear neighbours, layer scales into the preceding 1×1 conv, the twin heads
    into one linear layer, and the additive attention runs as two large matmuls. Feature maps flow
    channels-last ``(B, H, W, C)``, the fastest form for eager PyTorch and ExecuTorch; ``channels_last=False``
    keeps them NCHW, the form ONNX Runtime runs fastest (see :mod:`swiftformer.models.fused`). ``model``
    itself is left untouched.
    """
    if not hasattr(model, "reparameterize"):
        raise TypeError(f"{type(model).__name__} has no reparameterize(): not a SwiftFormer model")
    with torch.inference_mode(False):  # normal tensors even when called in inference mode: they track in-place updates
        body = set_layout(copy.deepcopy(model).eval().reparameterize(), channels_last)
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    return FusedModel(body, dict(getattr(model, "pretrained_cfg", {}))).eval()
