"""Quantization-aware fine-tuning: ``swiftformer train --qat --finetune RUN/best.pth``.

Post-training int8 rounds weights and activations that the network never saw rounded; where that moves too many
predictions (docs/quantization.md), a short fine-tune through the rounding lets the weights settle on the int8 grid.
The fine-tune distils from the float model it starts from (:func:`float_teacher`), so it learns to predict as fp32
does, which is what every int8 export is checked on.
The model trained is the fused inference form (:func:`~swiftformer.models.fused.reparameterize`), the graph every
int8 artefact quantizes, with fake quantization inserted by PT2E ``prepare_qat_pt2e`` after the int8 rule of
:func:`swiftformer.pt2e.int8_quantizer` (convolutions, the stem's in float). It is captured in NCHW
layout, where the MLPs' 1x1 convolutions are convolutions as ONNX Runtime and OpenVINO quantize them.

The run's checkpoints hold the fused float weights beside the fake quantizers' state (``activation_post_process_*``,
for ``--resume``); :func:`fused_from_run` reads them back as a :class:`~swiftformer.models.fused.FusedModel`, which
``swiftformer export --precision int8`` calibrates and quantizes with each runtime's own toolkit, and which
``eval``/``predict`` run in float.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .checkpoint import load_native_state_dict
from .errors import DataError, SwiftFormerError
from .models.fused import FusedModel, reparameterize

log = logging.getLogger(__name__)

# Above this a QAT run drifts from the float model it refines (measured: 1e-4 drifted L1, 1e-5 held).
QAT_MAX_LR = 1e-4
OBSERVER_PREFIX = "activation_post_process_"  # PT2E's name for each inserted fake quantizer (weights and activations)


def check_qat_config(finetune: str | None, resume: str | None) -> None:
    """QAT refines trained weights: it needs them (and distils from them, :func:`float_teacher`)."""
    if not (finetune or resume):
        raise SwiftFormerError("--qat fine-tunes trained weights for int8: give --finetune RUN/best.pth "
                               "(a float model trained on these classes)")


def warn_if_resized(finetune: str, run: Mapping[str, Any] | None, img_size: int) -> None:
    """A warning when QAT runs at another image size than ``run`` (the ``finetune`` checkpoint, when a run of ours)
    was trained at: int8 is to predict what the deployed float model predicts, and at another size that model is
    itself another model."""
    trained = run["config"].get("img_size") if run else None
    if trained and trained != img_size:
        log.warning("--qat at %d px refines %s, trained at %d px: its top-1 and its agreement with the float model "
                    "are those of the model at %d px; give --img-size %d to quantize the model you trained",
                    img_size, finetune, trained, img_size, trained)


def warn_if_fast(lr: float) -> None:
    """A warning before a QAT run at a recipe's training rate, which moves the weights away from the float model
    they refine (docs/quantization.md): said before the epochs, not only in the drift warning after them."""
    if lr > QAT_MAX_LR:
        log.warning("--qat at lr %g: QAT at 1e-4 already moved L1 to 95 %% agreement with its float model, at 1e-5 it "
                    "stayed at 99 %% (docs/quantization.md); give --lr 1e-5", lr)


def check_teacher_classes(finetune: str, run: Mapping[str, Any] | None, class_names: list[str], data: str) -> None:
    """The float model QAT distils from must predict the data's classes, in their order: a head that fine-tuning
    would replace for other classes is untrained, and distilling from it would teach noise. ``run`` is the
    ``finetune`` checkpoint when it is a run of ours (``None`` for other files and Hugging Face folders)."""
    from .checkpoint import checkpoint_num_classes, read_native_state_dict
    from .labels import check_class_names

    names = run.get("class_names") if run else None  # a run of ours names its classes
    found = len(names) if names else checkpoint_num_classes(read_native_state_dict(finetune)[0])
    if found != len(class_names):
        raise DataError(f"--qat distils from {finetune}, which predicts {found} classes, but {data} has "
                        f"{len(class_names)}: train a float model on these classes first, then --qat --finetune it")
    if names:
        check_class_names(list(names), class_names, finetune, data)


def check_run(finetune: str | None, run: Mapping[str, Any] | None, class_names: list[str], data: str, img_size: int,
              lr: float) -> None:
    """QAT's checks and warnings against the data, before any training work (``run``: the ``finetune``
    checkpoint when it is a run of ours)."""
    if finetune:
        check_teacher_classes(finetune, run, class_names, data)
        warn_if_resized(finetune, run, img_size)
    warn_if_fast(lr)


@dataclass
class QatTraining:
    """What a QAT run trains and learns from: the fused model through int8 fake quantization, and the frozen
    fused float model, whose soft targets it learns (labels unused: :func:`float_teacher`) and whose top-1
    its own is measured against (the agreement every int8 export is checked on)."""

    model: nn.Module
    teacher: nn.Module
    distillation: str = "soft"
    alpha: float = 1.0


def prepare_training(model: nn.Module, float_model: nn.Module, img_size: int, device: torch.device) -> QatTraining:
    """``model`` (whose weights a resumed run's checkpoint then replaces) prepared for QAT on ``device``, and the
    teacher made from ``float_model`` (the ``--finetune`` weights; for a fresh run ``model`` itself)."""
    teacher = float_teacher(float_model).to(device)
    return QatTraining(prepare_qat(model.to(device), img_size), teacher)


def float_teacher(model: nn.Module) -> nn.Module:
    """The frozen fused float model that QAT distils from (soft targets, labels unused): the aim of int8 is to
    predict what fp32 predicts, the agreement every int8 export is checked on; labels would pull the fine-tuned
    weights away from the fp32 model as much as towards int8 (measured in docs/quantization.md)."""
    return reparameterize(model, channels_last=True)


def warn_if_drifting(agreement: float) -> None:
    """A warning when the simulated int8 model's top-1 agrees with its float model on fewer val images than an int8
    export must (:data:`~swiftformer.agreement.DEFAULT_MIN_AGREEMENT`): the export checks the artefact against the
    fine-tuned weights, so drift from the original model would otherwise go unseen."""
    from .agreement import DEFAULT_MIN_AGREEMENT

    bound = 100.0 * DEFAULT_MIN_AGREEMENT["int8"]
    if agreement < bound:
        log.warning("the QAT model agrees with the fp32 model it started from on %.2f %% of the val images, below the "
                    "%.0f %% an int8 export must reach: lower --lr (1e-5 measured, docs/quantization.md)", agreement, bound)


def prepare_qat(model: nn.Module, img_size: int) -> nn.Module:
    """``model`` fused, captured at ``img_size`` (any batch) and prepared for quantization-aware training, on
    ``model``'s device; ``.train()``/``.eval()`` work on the result as on any module."""
    try:
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        from .pt2e import int8_quantizer

        quantizer = int8_quantizer(qat=True)
    except ImportError as error:
        raise SwiftFormerError(f"--qat needs ExecuTorch's quantizer and torchao ({error}): "
                               "pip install 'swiftformer[export]'") from None
    fused = reparameterize(model, channels_last=False)
    for parameter in fused.parameters():
        parameter.requires_grad_(True)
    device = next(fused.parameters()).device
    example = torch.zeros(2, 3, img_size, img_size, device=device)
    batch = {"x": {0: torch.export.Dim("batch", min=1)}}
    captured = torch.export.export(fused, (example,), dynamic_shapes=batch).module()
    prepared = prepare_qat_pt2e(captured, quantizer)
    allow_exported_model_train_eval(prepared)
    return prepared


def load_qat_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """A QAT run's saved state into a freshly prepared model (``--resume``). Per-channel quantizer state is sized
    on the first batch a quantizer sees; it is sized here from the checkpoint, every other tensor must fit."""
    buffers = dict(model.named_buffers())
    for key, value in state_dict.items():
        buffer = buffers.get(key) if key.startswith(OBSERVER_PREFIX) else None
        if buffer is not None and buffer.shape != value.shape:
            buffer.resize_(value.shape)
    load_native_state_dict(model, state_dict)


def float_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fused model's own tensors of a QAT model's state dict, without the fake quantizers' state."""
    return {key: value for key, value in state_dict.items() if not key.startswith(OBSERVER_PREFIX)}


def fused_from_run(model: nn.Module, state_dict: Mapping[str, Any]) -> FusedModel:
    """The fused form of ``model`` (its architecture; the weights are replaced) with a QAT run's float weights."""
    fused = reparameterize(model, channels_last=False)
    load_native_state_dict(fused, float_weights(state_dict))
    return fused
