"""train_one_epoch and evaluate on tiny synthetic data: update counts, accumulation, exact metrics."""
from __future__ import annotations

import pytest
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from swiftformer import create_model
from swiftformer.engine import StepOptions, evaluate, train_one_epoch
from swiftformer.errors import SwiftFormerError
from swiftformer.losses import DistillationLoss


def loader(count: int, batch_size: int, num_classes: int = 3, size: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, size, size, generator=generator)
    targets = torch.arange(count) % num_classes
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size)


def fit(options: StepOptions, batches: int = 4, batch_size: int = 4):
    torch.manual_seed(0)
    model = create_model("swiftformer_xs", num_classes=3)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.025)
    scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=2, warmup_epochs=1, warmup_lr=1e-6,
                                       min_lr=1e-5, step_on_epochs=False, updates_per_epoch=max(1, batches // options.accum_steps))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats, step = train_one_epoch(model, DistillationLoss(nn.CrossEntropyLoss(), None), loader(batches * batch_size, batch_size),
                                  optimizer, scheduler, scaler, torch.device("cpu"), 0, 0, options=options)
    return model, before, stats, step, optimizer


@pytest.mark.parametrize("options", [StepOptions(), StepOptions(amp="bf16", channels_last=True, clip_grad=0.01)])
def test_one_update_per_batch_moves_weights_and_warms_up_lr(options):
    model, before, stats, step, optimizer = fit(options)
    assert step == stats.updates == 4
    assert stats.loss > 0 and stats.images_per_second > 0
    assert not torch.equal(before["stem.0.weight"], model.state_dict()["stem.0.weight"])
    # per-update schedule: 4 updates into 4 warm-up updates from 1e-6 towards 1e-3
    assert 1e-6 < optimizer.param_groups[0]["lr"] < 1e-3


def test_gradient_accumulation_counts_updates_not_batches():
    _, _, stats, step, _ = fit(StepOptions(accum_steps=2), batches=5)
    assert step == stats.updates == 2  # the fifth batch cannot fill an update: skipped


def test_too_few_batches_for_one_update_is_an_error():
    with pytest.raises(SwiftFormerError, match="cannot fill one update"):
        fit(StepOptions(accum_steps=8), batches=4)


class Lookup(nn.Module):
    """A 'model' whose logits are stored per image: image i holds its own index in pixel [0, 0, 0]."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.table[images[:, 0, 0, 0].long()]


def test_evaluate_counts_exactly_with_per_class_accuracy():
    num_classes, count = 6, 23
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(count, num_classes, generator=generator)
    targets = torch.randint(0, num_classes, (count,), generator=generator)
    images = torch.zeros(count, 3, 2, 2)
    images[:, 0, 0, 0] = torch.arange(count).float()
    data = DataLoader(TensorDataset(images, targets), batch_size=5)
    result = evaluate(Lookup(logits), data, torch.device("cpu"), num_classes)
    top5 = logits.topk(5, dim=1).indices
    assert result.count == count
    assert result.top1 == pytest.approx(100 * (logits.argmax(1) == targets).float().mean().item())
    assert result.top5 == pytest.approx(100 * (top5 == targets[:, None]).any(1).float().mean().item())
    assert result.loss == pytest.approx(nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
    assert result.class_total == torch.bincount(targets, minlength=num_classes).tolist()
    hits = logits.argmax(1) == targets
    assert result.class_correct == torch.bincount(targets[hits], minlength=num_classes).tolist()


def test_evaluate_top5_with_fewer_than_five_classes():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    images = torch.zeros(2, 3, 1, 1)
    images[1, 0, 0, 0] = 1
    result = evaluate(Lookup(logits), DataLoader(TensorDataset(images, torch.tensor([1, 1]))), torch.device("cpu"), 2)
    assert (result.top1, result.top5) == (50.0, 100.0)
