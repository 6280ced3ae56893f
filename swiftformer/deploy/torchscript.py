"""TorchScript ``.pt`` archives (traced fused graph, channels-last), run by ``torch.jit.load``: fp32 only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .graph import Run


def write(fused: nn.Module, example: torch.Tensor, out: Path, precision: str = "fp32",
          calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """Tracing records ``x.shape`` reads as size ops, so a traced graph takes any batch size."""
    torch.jit.trace(fused, example, check_trace=False).save(str(out))
    return out


def stored_precision(path: Path) -> None:
    """fp32 is the only precision written."""
    return None


def runner(path: Path, threads: int | None = None, precision: str = "fp32") -> Run:
    """Images to logits through the loaded archive (``threads``: PyTorch's own setting)."""
    loaded = torch.jit.load(str(path)).eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return loaded(x).float()

    return run
