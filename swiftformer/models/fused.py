"""Inference forms of the SwiftFormer blocks, built by each block's ``reparameterize()``.

They pass feature maps as channels-last ``(B, H, W, C)`` tensors. In that layout every 1×1 convolution is
a plain matrix multiply (``F.linear``, one BLAS call, no copies: PyTorch's CPU 1×1 conv on a channels-last
map takes a slow im2col path), the attention's ``(B, N, C)`` tokens are a free view, and the 3×3
convolutions see a channels-last NCHW view, which oneDNN runs directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import _is_graph_capture


def _conv_nhwc(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Run a conv on a ``(B, H, W, C)`` map through its channels-last NCHW view."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _add_linear(residual: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``residual + linear(x)`` with the residual as the GEMM accumulator: one memory pass less than
    ``residual + linear(x)`` (which writes the bias, runs the GEMM, then reads both for the sum).

    Exported graphs get the plain ``linear + add``: XNNPACK (ExecuTorch) delegates that pattern but would
    leave an ``addmm`` with a full-size accumulator to the slow portable kernels."""
    if _is_graph_capture():
        return residual + linear(x)
    out = torch.addmm(residual.reshape(-1, residual.shape[-1]), x.reshape(-1, x.shape[-1]), linear.weight.t())
    return out.add_(linear.bias).view(residual.shape)


class FusedStem(nn.Module):
    """Two conv + ReLU with BN folded: ``(B, 3, H, W)`` image -> ``(B, H/4, W/4, C)``."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x.contiguous(memory_format=torch.channels_last)))
        return F.relu(self.conv2(x)).permute(0, 2, 3, 1)


class FusedDownsample(nn.Module):
    """Stride-2 3×3 conv with BN folded, on ``(B, H, W, C)`` maps."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_nhwc(self.conv, x)


class FusedConvEncoder(nn.Module):
    """``x + fc2(gelu(fc1(dwconv(x))))``: BN folded into the depthwise conv, layer scale into ``fc2``."""

    def __init__(self, dwconv: nn.Conv2d, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.dwconv, self.fc1, self.fc2 = dwconv, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _add_linear(x, F.gelu(self.fc1(_conv_nhwc(self.dwconv, x))), self.fc2)


class FusedSwiftFormerEncoder(nn.Module):
    """Local representation, attention on the free ``(B, N, C)`` view, MLP with its BN folded into ``fc1``."""

    def __init__(self, local_representation: nn.Module, attn: nn.Module, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.local_representation, self.attn, self.fc1, self.fc2 = local_representation, attn, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        batch, height, width, channels = x.shape
        x = x + self.attn(x.reshape(batch, height * width, channels)).view(batch, height, width, channels)
        return _add_linear(x, F.gelu(self.fc1(x)), self.fc2)


class FusedHead(nn.Module):
    """Global average pool + one linear layer holding the final BN and both heads."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _is_graph_capture():  # a spatial mean of an NCHW map: the global pooling every backend delegates
            return self.head(x.permute(0, 3, 1, 2).mean(dim=(2, 3), keepdim=True).flatten(1))
        return self.head(x.mean(dim=(1, 2)))


class TokenScale(nn.Module):
    """Per-channel scale of ``(B, N, C)`` tokens: a layer scale kept beside an attention without fused form."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
