"""oneDNN kernels on pre-packed weights, for the fused blocks' eager CPU inference.

PyTorch's own CPU paths re-pack every weight on every call: MKL's GEMMs copy the weight matrix into their
panel layout, and ``nn.Conv2d`` reorders plain weights into oneDNN's blocked layout each time. At batch 1 the
weights are used once per pass and come from memory, so that repacking is a real share of the time.
``torch.ops.mkldnn._convolution_pointwise`` (what Inductor's freezing emits) runs a convolution on weights
reordered once, with the activation, or a residual add, fused into it. The packed weights are opaque oneDNN
tensors that cannot be copied or saved, so they are kept beside the model, not in it: one set per layer and
input shape, rebuilt when the weight changes (a new tensor or an in-place update such as ``load_state_dict``).
Writes that bypass autograd's version counter (``weight.data.mul_(...)``, NumPy views) are invisible to it: call
:func:`clear` after them.

Measured (``benchmarks/bench_fused.py --ablation``, ``benchmarks/bench_gemm.py``): the 3×3 convolutions are
faster packed at every shape SwiftFormer has; MLPs only from ``MIN_MLP_WEIGHTS`` weights per matrix
(SwiftFormer-L3 stages 3-4, L1 stage 4), below that MKL's GEMMs are faster than oneDNN's per-call overhead.
"""
from __future__ import annotations

import platform
import weakref

import torch
from torch import nn

ENABLED = True  # False: the fused blocks use PyTorch's plain ops only (what `bench_fused.py --ablation` compares)
MIN_MLP_WEIGHTS = 256 * 1024
_ONE_BY_ONE = ([0, 0], [1, 1], [1, 1], 1)  # padding, stride, dilation, groups
_SHAPES_PER_LAYER = 4
_X86 = (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
        and not torch.ops.mkldnn._is_mkldnn_acl_supported())
# layer -> {input shape: (weight it was packed from, (its data pointer, its version), packed weight)}
_packed: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


def applies(*inputs: torch.Tensor | None, weights: tuple[torch.Tensor, ...]) -> bool:
    """Whether the packed kernels can run on ``inputs`` with a layer's ``weights``: fp32 on an x86 CPU with oneDNN
    enabled, no autocast, no gradient wanted (the fused kernels have no backward), and weights that keep a version
    counter (not inference tensors, whose in-place updates could not be seen)."""
    tensors = [t for t in (*inputs, *weights) if t is not None]
    return (ENABLED and _X86 and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu")
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not any(w.is_inference() for w in weights)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


def clear(model: nn.Module | None = None) -> None:
    """Drop the packed weights of ``model``'s layers (all layers when None); they are rebuilt on the next call."""
    for layer in list(_packed) if model is None else model.modules():
        _packed.pop(layer, None)


def _packed_weight(layer: nn.Module, weight: torch.Tensor, conv_args: tuple, input_shape: torch.Size) -> torch.Tensor:
    """``weight`` (4-d, as a convolution weight) in the blocked layout oneDNN picks for NCHW inputs of ``input_shape``.

    An entry holds the tensor it was packed from, so a new weight can neither be mistaken for it (identity, data
    pointer and version must all match) nor reuse its freed address; entries of an older weight are dropped."""
    source, stamp = layer.weight, (layer.weight.data_ptr(), layer.weight._version)

    def is_current(entry: tuple) -> bool:
        return entry[0] is source and entry[1] == stamp

    cache = _packed.setdefault(layer, {})
    entry = cache.get(tuple(input_shape))
    if entry is not None and is_current(entry):
        return entry[2]
    for shape in [shape for shape, old in cache.items() if not is_current(old)]:
        del cache[shape]
    if len(cache) >= _SHAPES_PER_LAYER:
        cache.clear()
    weight = weight.detach().contiguous(memory_format=torch.channels_last)
    packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *conv_args, list(input_shape))
    cache[tuple(input_shape)] = (source, stamp, packed)
    return packed


def packs(layer: nn.Conv2d) -> bool:
    """Whether :func:`conv` takes ``layer``: explicit zero padding (not ``"same"``/``"valid"``, not reflect etc.)."""
    return layer.padding_mode == "zeros" and not isinstance(layer.padding, str)


def conv(layer: nn.Conv2d, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
    """``activation(layer(x))`` for an NCHW (preferably channels-last) ``x``; ``activation`` is ``"none"`` or
    ``"relu"``. The output is channels-last."""
    if not packs(layer):
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
