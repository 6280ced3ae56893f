"""Inference forms of the SwiftFormer blocks, built by each block's ``reparameterize()``.

By default they pass feature maps as channels-last ``(B, H, W, C)`` tensors. In that layout every 1×1
convolution is a plain matrix multiply (``F.linear``, one BLAS call, no copies: PyTorch's CPU 1×1 conv on a
channels-last map takes a slow im2col path), the attention's ``(B, N, C)`` tokens are a free view, and the 3×3
convolutions see a channels-last NCHW view, which oneDNN runs directly. ExecuTorch's XNNPACK runs that graph
best too (NHWC is its native layout). In eager CPU inference the 3×3 convolutions and the large MLPs run on
oneDNN with pre-packed weights (:mod:`swiftformer.models.onednn`).

Graph formats without strides (ONNX) turn every such view into a real ``Transpose``; for them
:func:`set_layout` switches the same modules to NCHW maps with 1×1 convolutions, the layout ONNX Runtime
optimises (its blocked NCHWc convolutions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn
from .attention import is_graph_capture


class FusedBlock(nn.Module):
    """A fused block that runs on ``(B, H, W, C)`` maps (``channels_last``, the default) or NCHW maps."""

    channels_last: bool = True

    def conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """A spatial conv; on ``(B, H, W, C)`` maps through their channels-last NCHW view."""
        if not self.channels_last:
            return conv(x)
        return _conv_nchw(conv, x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def pointwise(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """A 1×1 conv held as a linear layer: a GEMM over channels, or a 1×1 conv on NCHW maps."""
        if self.channels_last:
            return linear(x)
        return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)

    def add_pointwise(self, residual: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """``residual + pointwise(linear, x)``."""
        if self.channels_last and not is_graph_capture():
            return _add_linear(residual, x, linear)
        return residual + self.pointwise(linear, x)

    def add_mlp(self, residual: torch.Tensor, x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
        """``residual + fc2(gelu(fc1(x)))``, with the 1×1 convs as ``pointwise`` layers."""
        if self.channels_last and not is_graph_capture():
            large = fc1.weight.numel() >= onednn.MIN_MLP_WEIGHTS
            if large and onednn.applies(x, residual, fc1.bias, fc2.bias, weights=(fc1.weight, fc2.weight)):
                return onednn.add_mlp(residual, x, fc1, fc2)
        return self.add_pointwise(residual, F.gelu(self.pointwise(fc1, x)), fc2)


def set_layout(model: nn.Module, channels_last: bool) -> nn.Module:
    """Switch every fused block of ``model`` to ``(B, H, W, C)`` maps or to NCHW maps, and its conv weights to
    the matching memory format; returns ``model``.

    Both layouts compute the same function from the same weights; only the order of the ops' axes differs.
    """
    for module in model.modules():
        if isinstance(module, FusedBlock):
            module.channels_last = channels_last
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _conv_nchw(conv: nn.Conv2d, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``conv(x)`` (then ReLU) on an NCHW map: on oneDNN's pre-packed weights in eager CPU inference."""
    if not is_graph_capture() and onednn.packs(conv) and onednn.applies(x, conv.bias, weights=(conv.weight,)):
        return onednn.conv(conv, x, "relu" if relu else "none")
    return F.relu(conv(x)) if relu else conv(x)


def _add_linear(residual: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``residual + linear(x)`` with the residual as the GEMM accumulator: one memory pass less than
    ``residual + linear(x)`` (which writes the bias, runs the GEMM, then reads both for the sum).

    Eager only: exported graphs get the plain ``linear + add``, which XNNPACK (ExecuTorch) delegates, while
    it would leave an ``addmm`` with a full-size accumulator to the slow portable kernels."""
    out = torch.addmm(residual.reshape(-1, residual.shape[-1]), x.reshape(-1, x.shape[-1]), linear.weight.t())
    return out.add_(linear.bias).view(residual.shape)


class FusedStem(FusedBlock):
    """Two conv + ReLU with BN folded: ``(B, 3, H, W)`` image -> ``(B, H/4, W/4, C)`` (or NCHW) map."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            return F.relu(self.conv2(F.relu(self.conv1(x))))
        x = _conv_nchw(self.conv1, x.contiguous(memory_format=torch.channels_last), relu=True)
        return _conv_nchw(self.conv2, x, relu=True).permute(0, 2, 3, 1)


class FusedDownsample(FusedBlock):
    """Stride-2 3×3 conv with BN folded."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.proj = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.proj, x)


class FusedConvEncoder(FusedBlock):
    """``x + fc2(gelu(fc1(dwconv(x))))``: BN folded into the depthwise conv, layer scale into ``fc2``."""

    def __init__(self, dwconv: nn.Conv2d, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.dwconv, self.fc1, self.fc2 = dwconv, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_mlp(x, self.conv(self.dwconv, x), self.fc1, self.fc2)


class FusedSwiftFormerEncoder(FusedBlock):
    """Local representation, attention on the free ``(B, N, C)`` view, MLP with its BN folded into ``fc1``."""

    def __init__(self, local_representation: nn.Module, attn: nn.Module, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.local_representation, self.attn, self.fc1, self.fc2 = local_representation, attn, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        if self.channels_last:
            batch, height, width, channels = x.shape
            x = x + self.attn(x.reshape(batch, height * width, channels)).view(batch, height, width, channels)
        else:
            batch, channels, height, width = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            x = x + self.attn(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        return self.add_mlp(x, x, self.fc1, self.fc2)


class FusedHead(FusedBlock):
    """Global average pool + one linear layer holding the final BN and both heads."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            return self.head(x.mean(dim=(2, 3)))
        if is_graph_capture():  # a spatial mean of an NCHW map: the global pooling every backend delegates
            return self.head(x.permute(0, 3, 1, 2).mean(dim=(2, 3), keepdim=True).flatten(1))
        return self.head(x.mean(dim=(1, 2)))


class TokenScale(nn.Module):
    """Per-channel scale of ``(B, N, C)`` tokens: a layer scale kept beside an attention without fused form."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
