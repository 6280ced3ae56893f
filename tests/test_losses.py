"""Distillation through the distillation head: none, hard and soft, with their weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swiftformer import create_model, save_checkpoint
from swiftformer.errors import SwiftFormerError
from swiftformer.losses import DistillationLoss, base_criterion, build_teacher, released_teacher_classes


class FixedTeacher(nn.Module):
    """Returns preset logits whatever the images."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=generator)
    class_logits = torch.randn(6, 4, generator=generator)
    dist_logits = torch.randn(6, 4, generator=generator)
    teacher_logits = torch.randn(6, 4, generator=generator)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    return images, class_logits, dist_logits, teacher_logits, targets


def test_no_distillation_is_the_base_loss(batch):
    images, class_logits, _, _, targets = batch
    loss = DistillationLoss(nn.CrossEntropyLoss(), None, "none")
    assert torch.allclose(loss(images, class_logits, targets), F.cross_entropy(class_logits, targets))


def test_hard_distillation_learns_the_teacher_argmax(batch):
    images, class_logits, dist_logits, teacher_logits, targets = batch
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(teacher_logits), "hard", alpha=0.3)
    expected = 0.7 * F.cross_entropy(class_logits, targets) + 0.3 * F.cross_entropy(dist_logits, teacher_logits.argmax(1))
    assert torch.allclose(loss(images, (class_logits, dist_logits), targets), expected)


def test_soft_distillation_is_tau_squared_kl(batch):
    images, class_logits, dist_logits, teacher_logits, targets = batch
    tau = 2.0
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(teacher_logits), "soft", alpha=0.5, tau=tau)
    p_teacher = (teacher_logits / tau).softmax(1)
    kl = (p_teacher * (p_teacher.log() - (dist_logits / tau).log_softmax(1))).sum(1).mean() * tau**2
    expected = 0.5 * F.cross_entropy(class_logits, targets) + 0.5 * kl
    assert torch.allclose(loss(images, (class_logits, dist_logits), targets), expected, atol=1e-6)
    # a student that matches its teacher pays nothing for distillation
    only_distillation = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(teacher_logits), "soft", alpha=1.0, tau=tau)
    assert only_distillation(images, (class_logits, teacher_logits), targets).abs() < 1e-6


def test_a_one_head_student_learns_labels_and_teacher_through_its_head(batch):
    """The fused model of --qat has one head: both terms of the loss are on its logits."""
    images, class_logits, _, teacher_logits, targets = batch
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(teacher_logits), "soft", alpha=0.25)
    assert torch.allclose(loss(images, class_logits, targets), loss(images, (class_logits, class_logits), targets))
    only_teacher = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(teacher_logits), "soft", alpha=1.0)
    assert only_teacher(images, teacher_logits, targets).abs() < 1e-6 < only_teacher(images, class_logits, targets)


def test_distillation_trains_only_the_student(batch):
    images, class_logits, dist_logits, teacher_logits, targets = batch
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    dist_logits.requires_grad_(True)
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard")
    loss(images, (class_logits, dist_logits), targets).backward()
    assert dist_logits.grad is not None and dist_logits.grad.abs().sum() > 0
    assert teacher[1].weight.grad is None


def test_bad_settings_are_user_errors():
    with pytest.raises(SwiftFormerError, match="needs a teacher"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "hard")
    with pytest.raises(SwiftFormerError, match="unknown distillation"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "medium")


def test_base_criterion_follows_mixup_and_smoothing():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    assert isinstance(base_criterion(True, 0.1), SoftTargetCrossEntropy)
    assert isinstance(base_criterion(False, 0.1), LabelSmoothingCrossEntropy)
    assert isinstance(base_criterion(False, 0.0), nn.CrossEntropyLoss)


def test_teacher_from_a_checkpoint_is_frozen_and_must_fit_the_classes(tmp_path):
    path = save_checkpoint(create_model("swiftformer_xs", num_classes=10), tmp_path / "teacher.safetensors")
    teacher = build_teacher("swiftformer_xs", str(path), 10, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(SwiftFormerError, match="predicts 10 classes"):
        build_teacher("swiftformer_xs", str(path), 7, torch.device("cpu"))


def test_a_released_timm_teacher_is_checked_before_any_download_and_read_from_the_hub_cache(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    name = "resnet10t.c3_in1k"  # a small timm model standing in for the RegNetY-160 of the ImageNet recipe
    source = timm.create_model(name)
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--timm--resnet10t.c3_in1k"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(source.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))

    def no_download(*args, **kwargs):
        raise AssertionError("the Hub was asked for a teacher")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", no_download)
    assert released_teacher_classes(name) == 1000 and released_teacher_classes("swiftformer_s") == 1000
    with pytest.raises(SwiftFormerError, match="predicts 1000 classes, the dataset has 3"):
        build_teacher(name, None, 3, torch.device("cpu"))
    teacher = build_teacher(name, None, 1000, torch.device("cpu"))
    for key, tensor in source.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], tensor), key
