"""The training step and evaluation, as functions of explicit objects.

One code path: mixed precision (bf16/fp16), channels-last memory and gradient accumulation are switches
(``enabled=`` / a count of 1), never separate branches. ``train_one_epoch`` counts optimizer updates in
``step``, which drives the per-update learning-rate schedule and the EMA; ``evaluate`` returns exact counts
summed over all ranks.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import all_reduce_sum
from .errors import SwiftFormerError
from .runlog import RunLog

AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepOptions:
    """How each training step runs; the defaults are plain fp32, contiguous, one micro-batch per update."""

    amp: str = "none"  # none, bf16, fp16
    channels_last: bool = False
    accum_steps: int = 1
    clip_grad: float | None = None
    clip_mode: str = "agc"  # agc (adaptive, relative to each weight's norm), norm or value
    log_interval: int = 10  # updates between progress-bar refreshes (each one syncs the loss to the host)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if self.amp not in AMP_DTYPES:
            raise SwiftFormerError(f"unknown --amp {self.amp!r}; choose one of {', '.join(AMP_DTYPES)}")
        return AMP_DTYPES[self.amp]


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``, enabled only when a reduced-precision dtype is given."""
    return torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or ``torch.compile`` wrappers."""
    while isinstance(model, DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, DistributedDataParallel) else model._orig_mod
    return model


class TrainingDiverged(SwiftFormerError):
    """The loss or the weights became NaN or infinite; the run stops before writing such a checkpoint."""


@dataclass
class EpochStats:
    """Training loss (mean over all ranks' samples), learning rate at the end, throughput."""

    loss: float
    lr: float
    images_per_second: float
    updates: int
    seconds: float


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    epoch: int,
    step: int,
    *,
    ema: nn.Module | None = None,
    mixup: Mixup | None = None,
    options: StepOptions = StepOptions(),
    runlog: RunLog | None = None,
    world_size: int = 1,
) -> tuple[EpochStats, int]:
    """One pass over ``loader``; returns the epoch's stats and the new optimizer-update count ``step``.

    ``criterion(images, outputs, targets)`` (see :class:`swiftformer.losses.DistillationLoss`). Batches left
    over after the last full accumulation group are skipped, so every update sees ``accum_steps`` batches.
    """
    model.train()
    accum = options.accum_steps
    updates = len(loader) // accum
    if updates == 0:
        raise SwiftFormerError(f"{len(loader)} batches per epoch cannot fill one update of accum_steps={accum}")
    amp_dtype = options.amp_dtype
    fmt = memory_format(options.channels_last)
    parameters = [p for p in model.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    first_bad_update = torch.full((), -1, device=device, dtype=torch.int64)  # kept on the device: no sync per step
    seen = 0
    start = time.perf_counter()
    progress = (runlog or RunLog(".", enabled=False)).progress(islice(loader, updates * accum), updates * accum,
                                                               f"epoch {epoch + 1}")  # counted from 1, as the summary
    optimizer.zero_grad(set_to_none=True)
    for index, (images, targets) in enumerate(progress):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        images = images.contiguous(memory_format=fmt)
        is_update = (index + 1) % accum == 0
        # DDP all-reduces gradients on every backward; between updates only the local sum is needed.
        no_sync = isinstance(model, DistributedDataParallel) and not is_update
        with model.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(device, amp_dtype):
                outputs = model(images)
                loss = criterion(images, outputs, targets)
            scaler.scale(loss / accum).backward()
        loss_sum += loss.detach().double() * images.shape[0]
        first_bad_update = torch.where(~loss.detach().isfinite() & (first_bad_update < 0), step + 1, first_bad_update)
        seen += images.shape[0]
        if not is_update:
            continue
        if options.clip_grad is not None:
            scaler.unscale_(optimizer)  # clip true gradients, not fp16-scaled ones
            dispatch_clip_grad(parameters, options.clip_grad, mode=options.clip_mode)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        scheduler.step_update(num_updates=step)
        if ema is not None:
            ema.update(unwrap_model(model), step=step)
        if step % options.log_interval == 0 or index + 1 == updates * accum:
            if first_bad_update.item() >= 0:
                raise TrainingDiverged(
                    f"training diverged: the loss became NaN or infinite at update {first_bad_update.item()} "
                    f"(epoch {epoch + 1}); lower --lr, clip gradients or use --amp bf16"
                )
            mean_loss = loss_sum.item() / seen
            progress.update(loss=mean_loss, lr=optimizer.param_groups[0]["lr"], img_s=seen * world_size / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    totals = all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=device, dtype=torch.float64)]))
    stats = EpochStats(
        loss=(totals[0] / totals[1]).item(),
        lr=optimizer.param_groups[0]["lr"],
        images_per_second=totals[1].item() / seconds,
        updates=updates,
        seconds=seconds,
    )
    return stats, step


@dataclass
class EvalResult:
    """Exact counts over the whole validation set (all ranks)."""

    count: int
    top1: float  # percent
    top5: float
    loss: float
    class_correct: list[int] = field(default_factory=list)
    class_total: list[int] = field(default_factory=list)
    agreement: float | None = None  # percent of images on which the model's top-1 is the reference model's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    num_classes: int,
    *,
    amp: str = "none",
    channels_last: bool = False,
    runlog: RunLog | None = None,
    description: str = "eval",
    reference: nn.Module | None = None,
) -> EvalResult:
    """Top-1/top-5 accuracy, mean cross-entropy and per-class accuracy, summed over all ranks; with a
    ``reference`` model (QAT: the float model), the top-1 agreement with it too.

    Pass the plain model (not DDP): each rank runs its own shard, and shards may differ in batch count.
    """
    model.eval()
    amp_dtype = StepOptions(amp=amp).amp_dtype
    fmt = memory_format(channels_last)
    k = min(5, num_classes)
    # count, top1, top5, loss, per class (hits, images), agreement with the reference
    totals = torch.zeros(5 + 2 * num_classes, dtype=torch.float64, device=device)
    batches = (runlog or RunLog(".", enabled=False)).progress(loader, len(loader), description)
    for images, targets in batches:
        images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(k, dim=1).indices  # (B, k)
        hit1 = top[:, 0] == targets
        totals[0] += targets.numel()
        totals[1] += hit1.sum()
        totals[2] += (top == targets[:, None]).any(dim=1).sum()
        totals[3] += F.cross_entropy(logits, targets, reduction="sum").double()
        totals[4 : 4 + num_classes] += torch.bincount(targets[hit1], minlength=num_classes)
        totals[4 + num_classes : 4 + 2 * num_classes] += torch.bincount(targets, minlength=num_classes)
        if reference is not None:
            with autocast(device, amp_dtype):
                totals[-1] += (reference(images).argmax(dim=1) == top[:, 0]).sum()
    totals = all_reduce_sum(totals).cpu()
    count = int(totals[0])
    if count == 0:
        raise SwiftFormerError("the validation set is empty")
    return EvalResult(
        count=count,
        top1=100.0 * totals[1].item() / count,
        top5=100.0 * totals[2].item() / count,
        loss=totals[3].item() / count,
        class_correct=[int(v) for v in totals[4 : 4 + num_classes]],
        class_total=[int(v) for v in totals[4 + num_classes : 4 + 2 * num_classes]],
        agreement=100.0 * totals[-1].item() / count if reference is not None else None,
    )
