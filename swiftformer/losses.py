"""Training losses: the base classification loss and DeiT-style distillation through the distillation head.

SwiftFormer has two classifiers on the pooled features. With distillation, the class head learns the labels
and the distillation head learns the teacher (Touvron et al., DeiT, 2021):

- ``hard``: cross-entropy against the teacher's argmax;
- ``soft``: KL divergence between temperature-``tau`` softened distributions, scaled by ``tau**2``;
- ``none``: both heads learn the labels (the model averages them at inference either way).

``loss = (1 - alpha) * base(class_logits, labels) + alpha * distillation(distillation_logits, teacher)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from .errors import SwiftFormerError
from .recipes import DISTILLATION_KINDS

def base_criterion(mixup_active: bool, smoothing: float) -> nn.Module:
    """Soft-target CE when mixup makes the targets soft (it already smooths them), else (smoothed) CE."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()


class DistillationLoss(nn.Module):
    """Base loss on the class head plus distillation of a frozen ``teacher`` into the distillation head."""

    def __init__(self, base: nn.Module, teacher: nn.Module | None, kind: str = "none", alpha: float = 0.5, tau: float = 1.0) -> None:
        super().__init__()
        if kind not in DISTILLATION_KINDS:
            raise SwiftFormerError(f"unknown distillation {kind!r}; choose one of {', '.join(DISTILLATION_KINDS)}")
        if kind != "none" and teacher is None:
            raise SwiftFormerError(f"{kind} distillation needs a teacher model")
        self.base, self.kind, self.alpha, self.tau = base, kind, alpha, tau
        self.teacher = teacher if kind != "none" else None

    def forward(
        self, images: torch.Tensor, outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor
    ) -> torch.Tensor:
        """``outputs``: logits, or ``(class_logits, distillation_logits)`` from a distilled-training model; a
        one-head student (the fused model of ``--qat``) learns labels and teacher through its one head."""
        if self.teacher is None:
            return self.base(outputs, targets)
        class_logits, dist_logits = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        base_loss = self.base(class_logits, targets)
        with torch.no_grad():
            teacher_logits = self.teacher(images).float()
        return (1 - self.alpha) * base_loss + self.alpha * self.distillation(dist_logits.float(), teacher_logits)

    def distillation(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "hard":
            return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))
        tau = self.tau
        return F.kl_div(
            F.log_softmax(student_logits / tau, dim=1),
            F.log_softmax(teacher_logits / tau, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (tau * tau)


def released_teacher_classes(name: str) -> int:
    """Class count of the released weights of teacher ``name``, from its config alone (no download): 1000 for a
    SwiftFormer variant (ImageNet-1K), else timm's pretrained config of ``name``."""
    from timm.models import get_pretrained_cfg

    from .models import list_models

    if name.split(".")[0] in list_models():
        return 1000
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise SwiftFormerError(f"unknown teacher {name!r}: timm has no pretrained weights of that name")
    return int(cfg.num_classes)


def build_teacher(name: str, checkpoint: str | None, num_classes: int, device: torch.device) -> nn.Module:
    """A frozen teacher in eval mode: a SwiftFormer variant or any timm model.

    ``checkpoint=None`` takes the released weights of ``name`` (e.g. ``regnety_160.deit_in1k``, the DeiT
    teacher) from the Hub cache or the Hub, after checking their class count against ``num_classes``;
    otherwise the file is read safely (tensors only).
    """
    from .checkpoint import hub_file, read_checkpoint
    from .models import list_models
    from .pretrained import create_model

    if checkpoint is None:
        _check_teacher_classes(name, released_teacher_classes(name), num_classes)
    if name.split(".")[0] in list_models():
        teacher = create_model(name, pretrained=checkpoint or True)
    elif checkpoint is None:
        from timm.models import get_pretrained_cfg

        weights = hub_file(get_pretrained_cfg(name).hf_hub_id)
        teacher = _create_timm(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    else:
        state_dict, _ = read_checkpoint(checkpoint)
        teacher = _create_timm(name, num_classes=int(state_dict[_last_weight(state_dict)].shape[0]))
        try:
            teacher.load_state_dict(state_dict)
        except RuntimeError as error:
            raise SwiftFormerError(f"teacher checkpoint {checkpoint} does not fit {name}: {str(error).splitlines()[0]}") from None
    _check_teacher_classes(name, teacher.num_classes, num_classes)
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


def _check_teacher_classes(name: str, teacher_classes: int, num_classes: int) -> None:
    if teacher_classes != num_classes:
        raise SwiftFormerError(
            f"the teacher {name} predicts {teacher_classes} classes, the dataset has {num_classes}: give "
            f"--teacher-checkpoint of a teacher trained on these classes, or --distillation none"
        )


def _create_timm(name: str, **kwargs: object) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, OSError) as error:
        raise SwiftFormerError(f"cannot build teacher {name!r}: {str(error).splitlines()[0]}") from None


def _last_weight(state_dict: dict[str, torch.Tensor]) -> str:
    """The classifier weight: the last 2-D tensor of the state dict."""
    return [k for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2][-1]
