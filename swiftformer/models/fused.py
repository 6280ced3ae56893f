"""The fused inference form: folding maths, the fused blocks, the walker and the layout switch.

Each training-form block owns its fusion in a ``reparameterize()`` method (ml-fastvit's pattern) that builds one
of the blocks below from folded weights; :func:`reparameterize` deep-copies a model and walks it once.

Layout. By default the fused blocks pass feature maps as channels-last ``(B, H, W, C)`` tensors. In that layout
every 1×1 convolution is a plain matrix multiply (``F.linear``, one BLAS call, no copies: PyTorch's CPU 1×1 conv
on a channels-last map takes a slow im2col path), the attention's ``(B, N, C)`` tokens are a free view, and the
3×3 convolutions see a channels-last NCHW view, which oneDNN runs directly. ExecuTorch's XNNPACK runs that graph
best too (NHWC is its native layout). Graph formats without strides (ONNX) turn every such view into a real
``Transpose``; for them :func:`set_layout` switches the same modules to NCHW maps with 1×1 convolutions, the
layout ONNX Runtime optimises (its blocked NCHWc convolutions).

Graph capture. Under ``torch.export`` / ``torch.compile`` / tracing the blocks emit plain ops that every export
backend delegates (:func:`is_graph_capture`); eager inference takes a few in-place and accumulate-into shortcuts.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-12  # F.normalize's default, the official code's


def is_graph_capture() -> bool:
    """True while ``torch.export`` / ``torch.compile`` / ``torch.jit.trace`` records the forward."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()


# Folding maths -----------------------------------------------------------------------------------------------
def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``x * scale + shift`` (per channel): the one BN folding every fold below builds on."""
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


def _bias(layer: nn.Conv2d | nn.Linear) -> torch.Tensor:
    return layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.weight.shape[0])


@torch.no_grad()
def fold_bn_after_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one conv."""
    scale, shift = bn_affine(bn)
    return _conv_like(conv, conv.weight * scale[:, None, None, None], _bias(conv) * scale + shift)


@torch.no_grad()
def fold_bn_before_linear(bn: nn.BatchNorm2d, linear: nn.Linear) -> nn.Linear:
    """``linear(bn(x))`` over the channel axis as one linear layer.

    Exact for a 1×1 conv held as a linear layer and for a classifier on globally pooled features: BN's shift is
    spatially constant and pooling commutes with a per-channel affine map."""
    scale, shift = bn_affine(bn)
    folded = nn.Linear(linear.in_features, linear.out_features)
    folded.weight.copy_(linear.weight * scale[None, :])
    folded.bias.copy_(_bias(linear) + linear.weight @ shift)
    return folded


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


@torch.no_grad()
def average_linears(layers: list[nn.Linear]) -> nn.Linear:
    """``mean(layer(x) for layer in layers)`` as one linear layer (the class and distillation heads)."""
    merged = nn.Linear(layers[0].in_features, layers[0].out_features)
    merged.weight.copy_(torch.stack([layer.weight for layer in layers]).mean(0))
    merged.bias.copy_(torch.stack([_bias(layer) for layer in layers]).mean(0))
    return merged


# Fused blocks ------------------------------------------------------------------------------------------------
class FusedBlock(nn.Module):
    """A fused block that runs on ``(B, H, W, C)`` maps (``channels_last``, the default) or NCHW maps."""

    channels_last: bool = True

    def conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """A spatial conv; on ``(B, H, W, C)`` maps through their channels-last NCHW view."""
        if not self.channels_last:
            return conv(x)
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

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
        return self.add_pointwise(residual, F.gelu(self.pointwise(fc1, x)), fc2)


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
        x = F.relu(self.conv1(x.contiguous(memory_format=torch.channels_last)))
        return F.relu(self.conv2(x)).permute(0, 2, 3, 1)


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


def l2_normalize_(x: torch.Tensor, dim: int, eps: float = EPS) -> torch.Tensor:
    """``F.normalize`` in place for eager inference: two passes over ``x`` (norm, divide) instead of four.

    Same value as ``x / max(||x||, eps)``. A tensor that autograd tracks is left unchanged (a new one is returned).
    """
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps)
    return x / norm if x.requires_grad else x.div_(norm)  # autograd needs x unchanged


class FusedAdditiveAttention(nn.Module):
    """Inference form of :class:`~swiftformer.models.attention.EfficientAdditiveAttention`: same function, fewer
    and larger ops.

    - ``to_query`` and ``to_key`` are one linear layer ``(B, N, C) -> (B, N, 2C)``, normalised in one op.
    - ``final(proj(G ⊙ k) + q) = (W_f W_p diag(G)) k + W_f q + (W_f b_p + b_f)``: ``W_f W_p`` is
      precomputed, so the two output projections become one batched matmul of ``[q, k]`` ``(B, N, 2C)``
      with a per-image ``(2C, C)`` matrix, with the bias (and any layer scale) folded in.
    """

    def __init__(self, attn: nn.Module, output_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        dim = attn.to_query.in_features
        scale = torch.ones(dim) if output_scale is None else output_scale.detach().reshape(dim)
        with torch.no_grad():
            w_final = attn.final.weight * scale[:, None]  # (C_out, C)
            self.legacy = attn.legacy
            self.qk_weight = nn.Parameter(torch.cat([attn.to_query.weight, attn.to_key.weight]))
            self.qk_bias = nn.Parameter(torch.cat([attn.to_query.bias, attn.to_key.bias]))
            self.score_weight = nn.Parameter(attn.w_g.t() * attn.scale)  # (1, C): a linear layer to one score
            # out = q Wq^T + (G ⊙ k) Wk^T + bias, with Wq, Wk (C_out, C) as linear-layer weights.
            self.query_out = nn.Parameter(w_final.clone())
            self.key_out = nn.Parameter(w_final @ attn.proj.weight)
            self.bias = nn.Parameter(w_final @ attn.proj.bias + attn.final.bias * scale)
            self.register_buffer("ones", self.qk_weight.new_ones(1, dim), persistent=False)  # sums over channels as a GEMM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_graph_capture():
            return self.forward_exportable(x)
        batch, tokens, dim = x.shape
        qk = l2_normalize_(F.linear(x, self.qk_weight, self.qk_bias).view(batch, tokens, 2, dim), dim=-1)
        qk = qk.view(batch, tokens, 2 * dim)
        query = qk[..., :dim]
        if self.legacy:
            global_query = query.sum(dim=1)  # (B, C)
        else:
            scores = l2_normalize_(F.linear(query, self.score_weight), dim=1)  # (B, N, 1)
            global_query = torch.bmm(scores.transpose(1, 2), query).squeeze(1)  # (B, C)
        key_out = global_query.unsqueeze(-1) * self.key_out.t()  # (B, C, C_out)
        out_weight = torch.cat([self.query_out.t().expand(batch, -1, -1), key_out], dim=1)  # (B, 2C, C_out)
        return torch.baddbmm(self.bias, qk, out_weight)

    def forward_exportable(self, x: torch.Tensor) -> torch.Tensor:
        """The same function from ops every export backend runs in its fast path (what graph capture sees).

        L2 normalisations are ``u * rsqrt(sum(u²))`` with ``u = x / max|x|``: no ``l2_norm``-style op, which not
        every backend (the Neural Engine) takes, and no overflow in fp16 (a trained XS's last attention has
        ``sum(x²)`` ~ 6e6, beyond fp16's 65504; ``u²`` sums to at most the vector's length). Reductions are matrix
        products where they can be (XNNPACK delegates GEMMs, not ``sum``), no operand is 1-D (coremltools'
        matmul rejects one), and nothing is expanded per image: ``out = q W_q + (G ⊙ k) W_k + b``.
        """
        batch, tokens, dim = x.shape
        qk = F.linear(x, self.qk_weight, self.qk_bias).view(batch, tokens, 2, dim)
        qk = qk / qk.abs().amax(dim=-1, keepdim=True).clamp_min(EPS)
        # sum(u²) >= 1 (max|u| = 1) unless x is (near) zero: the clamp is F.normalize's ``max(||x||, eps)``
        qk = (qk * torch.rsqrt(F.linear(qk * qk, self.ones).clamp_min(1.0))).view(batch, tokens, 2 * dim)
        query, key = qk[..., :dim], qk[..., dim:]  # (B, N, C) each
        if self.legacy:
            global_query = query.sum(dim=1, keepdim=True)  # (B, 1, C)
        else:
            scores = F.linear(query, self.score_weight)  # (B, N, 1)
            scores = scores / scores.abs().amax(dim=1, keepdim=True).clamp_min(EPS)
            scores_t = scores.transpose(1, 2)  # (B, 1, N)
            global_query = torch.bmm(scores_t, query) * torch.rsqrt(torch.bmm(scores_t, scores).clamp_min(1.0))
        return F.linear(query, self.query_out, self.bias) + F.linear(global_query * key, self.key_out)


class TokenScale(nn.Module):
    """Per-channel scale of ``(B, N, C)`` tokens: a layer scale kept beside an attention without fused form."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


# The walker and the fused model ------------------------------------------------------------------------------
def set_layout(model: nn.Module, channels_last: bool) -> nn.Module:
    """Switch every fused block of ``model`` to ``(B, H, W, C)`` maps or to NCHW maps, and its conv weights to
    the matching memory format; returns ``model``.

    Both layouts compute the same function from the same weights; only the order of the ops' axes differs.
    """
    for module in model.modules():
        if isinstance(module, FusedBlock):
            module.channels_last = channels_last
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def reparameterize_children(module: nn.Module) -> nn.Module:
    """``module`` with every module in it that has ``reparameterize()`` replaced by its result."""
    if hasattr(module, "reparameterize"):
        return module.reparameterize()
    for name, child in module.named_children():
        setattr(module, name, reparameterize_children(child))
    return module


class FusedModel(nn.Module):
    """A reparameterized network: same input and output as the model it came from, fewer ops."""

    def __init__(self, body: nn.Module, pretrained_cfg: dict, variant: str | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.body = body
        self.pretrained_cfg = pretrained_cfg
        self.variant = variant
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@torch.no_grad()
def reparameterize(model: nn.Module, channels_last: bool = True) -> FusedModel:
    """A fused copy of ``model`` for inference: same outputs as ``model.eval()``, fewer ops.

    BN is folded into its conv/linear neighbours, layer scales into the preceding 1×1 conv, the twin heads
    into one linear layer, and the additive attention runs as two large matmuls. Feature maps flow
    channels-last ``(B, H, W, C)``, the fastest form for eager PyTorch and ExecuTorch; ``channels_last=False``
    keeps them NCHW, the form ONNX Runtime runs fastest (module docstring). ``model`` itself is left untouched.
    """
    if not hasattr(model, "reparameterize"):
        raise TypeError(f"{type(model).__name__} has no reparameterize(): not a SwiftFormer model")
    with torch.inference_mode(False):  # normal tensors even when called in inference mode: loadable and trainable later
        body = set_layout(copy.deepcopy(model).eval().reparameterize(), channels_last)
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    return FusedModel(body, dict(getattr(model, "pretrained_cfg", {})), getattr(model, "variant", None),
                      getattr(model, "num_classes", None)).eval()
