"""The token mixers compared in the SwiftFormer paper (Fig. 2), behind one calling convention.

Every module maps tokens ``(B, N, C) -> (B, N, C)``, so the SwiftFormer encoder block can take any of them
(``create_model(..., attention=NAME)``) and the paper's ablation can be re-run:

- ``additive``: efficient additive attention (SwiftFormer, current official weights), O(N·C²).
- ``additive_legacy``: the same module as the official code ran before July 2023 (and Hugging Face
  transformers still runs): the token softmax ran over a size-1 axis, so every token weight is 1.
- ``mhsa``: standard multi-head self-attention (Vaswani et al.), O(N²·C).
- ``transposed``: transposed / channel self-attention (XCiT, Restormer), a d×d map per head, O(N·C²/h).
- ``separable``: MobileViT-v2 separable self-attention, O(N·C).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused import FusedAdditiveAttention


class EfficientAdditiveAttention(nn.Module):
    """Efficient additive attention (SwiftFormer, Eq. 4-6).

    q, k are L2-normalised over channels; a learned vector ``w_g`` scores each query token,
    the scores are L2-normalised over tokens (``legacy=False``) into a global query
    ``G = Σ_n a_n q_n``, and ``out = final(proj(G ⊙ k) + q)``. Cost is linear in the token count.

    ``legacy=True`` reproduces the pre-July-2023 official code, whose softmax ran over a size-1 axis:
    every score is 1 and ``G = Σ_n q_n``. Released weights of that generation (and Hugging Face
    transformers' port) only give their published accuracy with it.
    """

    def __init__(self, dim: int, legacy: bool = False) -> None:
        super().__init__()
        self.legacy = legacy
        self.scale = dim**-0.5
        self.to_query = nn.Linear(dim, dim)
        self.to_key = nn.Linear(dim, dim)
        self.w_g = nn.Parameter(torch.randn(dim, 1))
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)

    def global_query(self, query: torch.Tensor) -> torch.Tensor:
        """Pool normalised queries ``(B, N, C)`` into the global query ``(B, 1, C)``."""
        if self.legacy:
            return query.sum(dim=1, keepdim=True)
        scores = F.normalize(query @ self.w_g * self.scale, dim=1)  # (B, N, 1)
        return (scores * query).sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = F.normalize(self.to_query(x), dim=-1)
        key = F.normalize(self.to_key(x), dim=-1)
        return self.final(self.proj(self.global_query(query) * key) + query)

    def reparameterize(self, output_scale: torch.Tensor | None = None) -> FusedAdditiveAttention:
        """The inference form; ``output_scale`` (C,) is a layer scale folded into its output."""
        return FusedAdditiveAttention(self, output_scale)


class _HeadedQKV(nn.Module):
    """One linear layer for q, k and v split into heads, and the output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C) -> (B, N, 3, h, C/h)``."""
        batch, tokens, dim = x.shape
        return self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)


class MultiHeadSelfAttention(_HeadedQKV):
    """Standard multi-head self-attention: ``softmax(q kᵀ / √d) v`` over tokens, O(N²)."""

    def __init__(self, dim: int, num_heads: int = 4) -> None:
        super().__init__(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.split_heads(x).permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class TransposedSelfAttention(_HeadedQKV):
    """Transposed (channel) self-attention of XCiT / Restormer: a d×d attention map per head.

    q and k are L2-normalised over tokens, ``attn = softmax(τ · q kᵀ)`` over channels, O(N·d²).
    """

    def __init__(self, dim: int, num_heads: int = 4) -> None:
        super().__init__(dim, num_heads)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.split_heads(x).permute(2, 0, 3, 4, 1)  # each (B, h, d, N)
        query = F.normalize(query, dim=-1)
        key = F.normalize(key, dim=-1)
        attn = (query @ key.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # (B, h, d, d)
        return self.proj((attn @ value).permute(0, 3, 1, 2).reshape(x.shape))


class SeparableSelfAttention(nn.Module):
    """MobileViT-v2 separable self-attention: one context vector from softmax token scores, O(N·C).

    ``scores = softmax_N(x W_I)``, ``context = Σ_n scores_n · (x W_K)_n``,
    ``out = W_O (ReLU(x W_V) ⊙ context)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.qkv = nn.Linear(dim, 1 + 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores, key, value = self.qkv(x).split([1, self.dim, self.dim], dim=-1)
        context = (scores.softmax(dim=1) * key).sum(dim=1, keepdim=True)  # (B, 1, C)
        return self.out_proj(F.relu(value) * context)


ATTENTIONS = ("additive", "additive_legacy", "mhsa", "transposed", "separable")


def build_attention(name: str, dim: int, num_heads: int = 4) -> nn.Module:
    """Build a token mixer by name (see :data:`ATTENTIONS`)."""
    if name == "additive":
        return EfficientAdditiveAttention(dim)
    if name == "additive_legacy":
        return EfficientAdditiveAttention(dim, legacy=True)
    if name == "mhsa":
        return MultiHeadSelfAttention(dim, num_heads)
    if name == "transposed":
        return TransposedSelfAttention(dim, num_heads)
    if name == "separable":
        return SeparableSelfAttention(dim)
    raise ValueError(f"unknown attention {name!r}; choose one of {', '.join(ATTENTIONS)}")
