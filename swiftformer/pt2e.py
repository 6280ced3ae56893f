"""The int8 rule of PyTorch's PT2E quantization: what ``train --qat`` trains through and what the ExecuTorch int8
export (:mod:`swiftformer.deploy.executorch`) quantizes, so both round the same operations."""
from __future__ import annotations

import torch

from .models.fused import FusedStem


def int8_quantizer(qat: bool) -> object:
    """The XNNPACK PT2E quantizer with the int8 rule of every runtime here: convolutions only, per-channel
    symmetric int8 weights, affine int8 activations, the stem's in float (docs/quantization.md: on S, 96.8 % ->
    99.6 % agreement). ``qat``: fake quantization that training steps through (straight-through gradients)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_operator_type(
        torch.ops.aten.conv2d.default, get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))
    return quantizer.set_module_type(FusedStem, None)
