"""What every runtime's artefact shares: the input and output names, the batch bounds, the ``torch.export`` program
of the fused graph, the images-to-logits :data:`Run` each runtime's runner returns, and the check's errors."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import SwiftFormerError

# Upper bound of the batch dimension of a --dynamic-batch export (ExecuTorch and Core ML need one).
MAX_DYNAMIC_BATCH = 64
INPUT_NAME, OUTPUT_NAME = "image", "logits"
PROBABILITIES_NAME = "probabilities"  # the output of an image-form artefact (swiftformer.deploy.app_io)

Run = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) images -> (N, classes) logits; image form: pixels ->
# probabilities


class ExportCheckError(SwiftFormerError):
    """An exported artefact that is malformed or whose outputs differ from PyTorch's beyond the tolerance."""


class RuntimeUnavailable(SwiftFormerError):
    """A runtime that cannot run an artefact on this machine (Core ML predicts on macOS only)."""


def batch_dim(dynamic_batch: bool) -> dict | None:
    """``torch.export``'s dynamic shapes of a batch of 1..:data:`MAX_DYNAMIC_BATCH` images (``None``: fixed)."""
    if not dynamic_batch:
        return None
    return {"x": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}


def exported_program(fused: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> torch.export.ExportedProgram:
    return torch.export.export(fused, (example,), dynamic_shapes=batch_dim(dynamic_batch))


def contiguous_copy(fused: nn.Module) -> nn.Module:
    """The fused model with NCHW-contiguous weights: XNNPACK's layout pass rejects channels-last constants."""
    return copy.deepcopy(fused).to(memory_format=torch.contiguous_format)


def chunks(images: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """``images`` in batches of exactly ``batch`` (the last one dropped if short: calibration only)."""
    for start in range(0, images.shape[0] - batch + 1, batch):
        yield images[start : start + batch]


def padded(images: torch.Tensor, batch: int) -> torch.Tensor:
    """``images`` with their last one repeated up to ``batch``: the last chunk for a fixed-batch graph."""
    if images.shape[0] >= batch:
        return images
    return torch.cat([images, images[-1:].expand(batch - images.shape[0], *images.shape[1:])])
