"""Model size and cost: parameters and multiply-accumulates from PyTorch's own FLOP counter."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions, linear layers and matmuls).

    ``torch.utils.flop_counter`` counts 2 FLOPs per MAC; elementwise ops are not counted, as in the paper.
    """
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, in_chans, height, width))
    model.train(was_training)
    return counter.get_total_flops() // 2
