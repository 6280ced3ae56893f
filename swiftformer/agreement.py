"""How far a reduced-precision artefact is from the fp32 PyTorch model, on real images.

Top-1 agreement (the share of images on which both pick the same class), the largest and the mean absolute
difference of the softmax probabilities, and, when the images are labelled with the model's classes, the top-1
accuracy of both with the standard error of their difference: on a thousand images a few photos changing class move
top-1 by tenths of a point either way, and the user needs to know whether a loss is one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# The least top-1 agreement an artefact must reach (``--min-agreement`` overrides).
DEFAULT_MIN_AGREEMENT = {"fp16": 0.995, "bf16": 0.995, "int8": 0.98}
# A top-1 fall this many standard errors deep is beyond the check images' noise (about 1 in 40 by chance).
REAL_LOSS_SE = 2.0


@dataclass
class Agreement:
    images: int
    agreement: float  # 0..1
    max_prob_diff: float
    mean_prob_diff: float
    reference_top1: float | None  # % on labelled images
    artefact_top1: float | None
    # The standard error of artefact_top1 - reference_top1 in points, paired over the same images: only those on
    # which exactly one of the two is right carry it (McNemar's comparison).
    top1_change_se: float | None = None

    @property
    def top1_change(self) -> float | None:
        """The artefact's top-1 minus fp32's, in points."""
        return None if self.reference_top1 is None else self.artefact_top1 - self.reference_top1


def compare(reference: torch.Tensor, artefact: torch.Tensor, labels: torch.Tensor | None = None) -> Agreement:
    """Compare ``(N, classes)`` logits; ``labels`` are class indices of the model (or ``None``)."""
    if reference.shape != artefact.shape:
        raise ValueError(f"logits of shape {tuple(artefact.shape)} against {tuple(reference.shape)}")
    reference, artefact = reference.float(), artefact.float()
    diff = (reference.softmax(1) - artefact.softmax(1)).abs()
    same = (reference.argmax(1) == artefact.argmax(1)).double().mean()
    reference_top1 = artefact_top1 = change_se = None
    if labels is not None:
        right = [(logits.argmax(1) == labels).double() for logits in (reference, artefact)]
        change = right[1] - right[0]  # per image: +1 fixed, -1 broken, 0 either both right or both wrong
        reference_top1, artefact_top1 = (float(100.0 * hits.mean()) for hits in right)
        change_se = float(100.0 * change.std(correction=0) / len(change) ** 0.5)
    return Agreement(reference.shape[0], float(same), float(diff.max()), float(diff.mean()), reference_top1,
                     artefact_top1, change_se)


def _match_classes(folder_classes: list[str] | None, model_classes: list[str]) -> tuple[list[int] | None, str]:
    """The model's class index of each folder class, or ``None`` with the reason the folder gives no top-1."""
    from .errors import DataError
    from .labels import model_class_indices

    if folder_classes is None:
        return None, "the check images are not in class folders (DIR/CLASS/IMAGE), so they carry no labels"
    try:
        return model_class_indices(model_classes, folder_classes, "the model", "the check folder"), ""
    except DataError as error:
        return None, str(error)


def unlabelled_reason(folder_classes: list[str] | None, model_classes: list[str]) -> str:
    """Why a folder's images give no top-1 against a model (``""`` when they give one)."""
    return _match_classes(folder_classes, model_classes)[1]


def model_labels(folder_labels: torch.Tensor | None, folder_classes: list[str] | None,
                 model_classes: list[str]) -> torch.Tensor | None:
    """The folder's labels as the model's class indices (matched by name), or ``None`` for unlabelled images and
    for a folder holding a class the model lacks (top-1 is then not reported: :func:`unlabelled_reason` says why)."""
    indices, _ = _match_classes(folder_classes, model_classes)
    if folder_labels is None or indices is None:
        return None
    return torch.tensor(indices)[folder_labels]


def format_table(rows: dict[str, Agreement]) -> str:
    """One row per artefact: images, agreement %, max and mean |Δp|, top-1 of fp32 PyTorch and of the artefact, and
    their difference with its standard error."""
    header = (f"{'artefact':<16}{'images':>7}{'agree %':>9}{'max |dp|':>10}{'mean |dp|':>11}{'top-1 fp32':>12}"
              f"{'top-1':>8}{'change':>15}")
    lines = [header]
    for name, row in rows.items():
        top1 = (f"{row.reference_top1:>12.2f}{row.artefact_top1:>8.2f}{top1_change_text(row):>15}"
                if row.reference_top1 is not None else f"{'-':>12}{'-':>8}{'-':>15}")
        lines.append(f"{name:<16}{row.images:>7}{100 * row.agreement:>9.2f}{row.max_prob_diff:>10.4f}"
                     f"{row.mean_prob_diff:>11.5f}{top1}")
    return "\n".join(lines)


def top1_loss_warning(row: Agreement) -> str:
    """A warning when the artefact's top-1 fell further below fp32's than the check images' noise explains."""
    change, se = row.top1_change, row.top1_change_se
    if change is None or change >= -REAL_LOSS_SE * se:
        return ""
    depth = f"{-change / se:.1f} standard errors" if se else "on every image it changed"
    return (f"top-1 fell {-change:.2f} points below fp32 on these {row.images} images, {depth}: more than their noise "
            "explains but about 1 time in 40; check on more images (--check-data DIR, --check-size N) to be sure")


def top1_change_text(row: Agreement) -> str:
    """The top-1 change with its standard error, e.g. ``-0.80+/-0.36``."""
    return f"{row.top1_change:+.2f}+/-{row.top1_change_se:.2f}"
