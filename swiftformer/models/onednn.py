"""oneDNN kernels on pre-packed weights, for the fused blocks' eager CPU inference.

PyTorch's own CPU paths re-pack every weight on every call: MKL's GEMMs copy the weight matrix into their
panel layout, and ``nn.Conv2d`` reorders plain weights into oneDNN's blocked layout each time. At batch 1 the
weights are used once per pass and come from memory, so that repacking is a real share of the time.
``torch.ops.mkldnn._convolution_pointwise`` (what Inductor's freezing emits) runs a convolution on weights
reordered once, with the activation, or a residual add, fused into it. The packed weights are opaque oneDNN
tensors that cannot be copied or saved, so they are kept beside the model, not in it: one set per layer and
input shape, rebuilt when the weight changes (a new tensor or an in-place update such as ``load_state_dict``).

Measured (``benchmarks/bench_fused.py --ablation``, ``benchmarks/bench_gemm.py``): the 3×3 convolutions are
faster packed at every shape SwiftFormer has; MLPs only from ``MIN_MLP_WEIGHTS`` weights per matrix
(SwiftFormer-L3 stages 3-4, L1 stage 4), below that MKL's GEMMs are faster than oneDNN's per-call overhead.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

ENABLED = True  # False: the fused blocks use PyTorch's plain ops only (what `bench_fused.py --ablation` compares)
MIN_MLP_WEIGHTS = 256 * 1024
_ONE_BY_ONE = ([0, 0], [1, 1], [1, 1], 1)  # padding, stride, dilation, groups
_SHAPES_PER_LAYER = 4
_X86 = torch.backends.mkldnn.is_available() and not torch.ops.mkldnn._is_mkldnn_acl_supported()
_packed: weakref.WeakKeyDictionary[nn.Module, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the packed kernels can run on ``tensors``: fp32 on an x86 CPU with oneDNN enabled, and no gradient
    wanted (the fused kernels have no backward)."""
    return (ENABLED and _X86 and torch.backends.mkldnn.enabled
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


def _packed_weight(layer: nn.Module, weight: torch.Tensor, conv_args: tuple, input_shape: torch.Size) -> torch.Tensor:
    """``weight`` (4-d, as a convolution weight) in the blocked layout oneDNN picks for NCHW inputs of ``input_shape``."""
    key = (tuple(input_shape), layer.weight.data_ptr(), layer.weight._version)  # changed or replaced: a new key
    cache = _packed.setdefault(layer, {})
    packed = cache.get(key)
    if packed is None:
        if len(cache) >= _SHAPES_PER_LAYER:
            cache.clear()
        weight = weight.detach().contiguous(memory_format=torch.channels_last)
        packed = cache[key] = torch.ops.mkldnn._reorder_convolution_weight(weight, *conv_args, list(input_shape))
    return packed


def conv(layer: nn.Conv2d, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
    """``activation(layer(x))`` for an NCHW (preferably channels-last) ``x``; ``activation`` is ``"none"`` or
    ``"relu"``. The output is channels-last."""
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise ValueError(f"packed convolutions take explicit zero padding, not {layer.padding!r} / {layer.padding_mode}")
    conv_args = (list(layer.padding), list(layer.stride), list(layer.dilation), layer.groups)
    return torch.ops.mkldnn._convolution_pointwise(
        x, _packed_weight(layer, layer.weight, conv_args, x.shape), layer.bias, *conv_args, activation, [], None)


def add_mlp(residual: torch.Tensor, x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
    """``residual + fc2(gelu(fc1(x)))`` on ``(B, H, W, C)`` maps as two 1×1 convolutions on their channels-last
    NCHW views, exact-erf GELU fused into the first and the residual add into the second."""
    pointwise = torch.ops.mkldnn._convolution_pointwise
    x = x.permute(0, 3, 1, 2)
    w1 = _packed_weight(fc1, fc1.weight[:, :, None, None], _ONE_BY_ONE, x.shape)
    hidden = pointwise(x, w1, fc1.bias, *_ONE_BY_ONE, "gelu", [], "none")
    w2 = _packed_weight(fc2, fc2.weight[:, :, None, None], _ONE_BY_ONE, hidden.shape)
    out = pointwise.binary(hidden, residual.permute(0, 3, 1, 2), w2, fc2.bias, *_ONE_BY_ONE, "add", None, None, [], None)
    return out.permute(0, 2, 3, 1)
