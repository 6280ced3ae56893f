"""Train a SwiftFormer: ``main(config)`` reads top to bottom.

Single process (CPU or one GPU)::

    swiftformer train --config swiftformer_xs --data /data/imagenet --output-dir runs/xs

One node, 8 GPUs; many nodes (run the same command on each, or see ``scripts/slurm_train.sh``)::

    torchrun --nproc_per_node=8 -m swiftformer train --config swiftformer_xs --data /data/imagenet
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m swiftformer train --config swiftformer_xs --data /data/imagenet

A run directory (:mod:`swiftformer.rundir`, locked while a run writes there) holds ``config.yaml`` (the resolved
recipe), ``log.jsonl`` (one record per saved epoch), ``last.pth`` and ``best.pth`` (plain-dict checkpoints,
``torch.load(weights_only=True)``-safe, written atomically) and ``curves.png``. ``--resume RUN/last.pth``
continues exactly where the run stopped.
``--qat --finetune RUN/best.pth`` fine-tunes the fused model through int8 fake quantization (:mod:`swiftformer.qat`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import logging
import os
import time
from pathlib import Path
from collections.abc import Collection
from typing import Any

import torch
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import qat
from .checkpoint import (
    checkpoint_num_classes, load_native_state_dict, safe_torch_load, training_run,
)
from .data import Datasets, build_datasets, build_loaders
from .distributed import DistInfo, all_gather_object, broadcast_buffers, cleanup, init_distributed
from .engine import StepOptions, TrainingDiverged, evaluate, memory_format, train_one_epoch
from .errors import CheckpointError, DataError, SwiftFormerError
from .labels import check_class_names
from .losses import DistillationLoss, base_criterion, build_teacher, released_teacher_classes
from .pretrained import create_model
from .recipes import TrainConfig
from .rundir import RunDirectory, check_run_directory, restore_rng, rng_state, seed_everything

log = logging.getLogger(__name__)


# Building blocks -------------------------------------------------------------------------------------------
def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The student; ``finetune`` loads weights of any format, replacing the head if the classes differ."""
    model = create_model(config.model, pretrained=config.finetune, num_classes=num_classes, attention=config.attention,
                         drop_path_rate=config.drop_path)
    model.set_grad_checkpointing(config.grad_checkpointing)
    model.set_distilled_training(config.distillation != "none")
    return model


@torch.no_grad()
def match_head_by_class_name(model: nn.Module, finetuned: dict[str, Any], class_names: list[str]) -> str:
    """Fine-tuning from a run of ours: each head row follows its class name, so the row trained for "dog" predicts
    "dog" in this run whatever the classes' order or count (kept head rows would otherwise keep their old meaning:
    "dog" answering for "cat"); the data's classes the run never saw start fresh. Returns what it did (``""``:
    nothing to do)."""
    stored = list(finetuned.get("class_names") or [])
    if not stored or stored == class_names:
        return ""  # the same classes (or unnamed ones: create_model matched the head by count)
    model.reset_classifier(len(class_names))
    kept = [(row, stored.index(name)) for row, name in enumerate(class_names) if name in stored]
    for prefix in ("head", "head_dist"):
        layer, weight = getattr(model, prefix), finetuned["model"].get(f"{prefix}.weight")
        if isinstance(layer, nn.Linear) and weight is not None and weight.shape[1] == layer.in_features:
            for row, old in kept:
                layer.weight[row] = weight[old]
                layer.bias[row] = finetuned["model"][f"{prefix}.bias"][old]
    new = [name for name in class_names if name not in stored]
    said = f"classifier head matched by class name: {len(kept)} kept"
    return f"{said}, {len(new)} new ({', '.join(new)})" if new else said


# EMA decay warm-up (timm): decay(step) = min(ema_decay, 1 - (1 + step / gamma) ** -power). With power 1 it is
# step / (step + gamma): the EMA averages about the last 1/gamma of the updates so far, so it tracks the model on a
# run of any length, and it reaches the recipe's decay after gamma * (1 / (1 - ema_decay) - 1) updates (125,000 for
# ImageNet's 0.99996: the last third of the official 300 epochs at batch 2048, 187,500 updates, averages exactly as
# the recipe says).
EMA_WARMUP_GAMMA = 5.0
EMA_WARMUP_POWER = 1.0


def build_ema(model: nn.Module, config: TrainConfig) -> ModelEmaV3 | None:
    """timm's EMA of weights and buffers, with the decay warm-up above unless ``ema_warmup`` is off; none for QAT,
    whose fake quantizers calibrate on the weights they see (and reshape their state on the first batch)."""
    if not config.ema_decay:
        return None
    if config.qat:
        log.info("quantization-aware training keeps no EMA of the weights (ema_decay %g not used)", config.ema_decay)
        return None
    return ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup,
                      warmup_gamma=EMA_WARMUP_GAMMA, warmup_power=EMA_WARMUP_POWER)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """timm's optimizer factory (no weight decay on biases and norms); Adam(W) uses PyTorch's fused kernel,
    one kernel for all parameters instead of several per tensor, which is most of the optimizer step's cost
    on CPU for a model of many small tensors."""
    fused = {"fused": True} if config.optimizer in ("adam", "adamw") else {}
    return create_optimizer_v2(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay, eps=config.opt_eps, **fused)


def build_mixup(config: TrainConfig, num_classes: int) -> Mixup | None:
    if config.mixup <= 0 and config.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=config.mixup,
        cutmix_alpha=config.cutmix,
        prob=config.mixup_prob,
        switch_prob=config.mixup_switch_prob,
        mode="batch",
        label_smoothing=config.smoothing,
        num_classes=num_classes,
    )


def build_checkpoint(
    model: nn.Module, ema: ModelEmaV3 | None, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
    epoch: int, step: int, best_top1: float, config: TrainConfig, class_names: list[str], rng: list[dict[str, Any]],
) -> dict[str, Any]:
    """The plain-dict checkpoint: everything ``--resume`` needs, and ``model``/``ema`` for ``load_checkpoint``."""
    return {
        "model": model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,  # epochs completed
        "step": step,  # optimizer updates completed
        "best_top1": best_top1,
        "config": config.to_dict(),
        "class_names": class_names,
        "rng": rng,  # one entry per rank
    }


def nonfinite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested dict/list that hold NaN or Inf."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(state.isfinite().all()) else []
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [name for key, value in items for name in nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))]


def _last_good(path: Path | None) -> str:
    if path is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {path}: --resume it with a lower --lr"


# The run directory and the checks against the data, all before any training work ---------------------------
def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its run directory and file paths absolute, so the saved config means the same from any
    working directory (``eval`` of a run elsewhere, ``--resume`` of a copied run)."""
    paths = {name: os.path.abspath(getattr(config, name))
             for name in ("output_dir", "data", "resume", "finetune", "teacher_checkpoint") if getattr(config, name)}
    return dataclasses.replace(config, **paths)


def check_batch_size(config: TrainConfig) -> None:
    """BatchNorm normalises each batch by its own statistics while training: it needs two images per process
    (QAT trains the fused model, whose BatchNorms are folded into the convolutions)."""
    if config.batch_size < 2 and not config.qat:
        raise SwiftFormerError(f"--batch-size {config.batch_size}: BatchNorm needs more than one image per process "
                               "to train; give --batch-size 2 or more")


def check_resumed_classes(path: str, checkpoint: dict[str, Any], config: TrainConfig, class_names: list[str]) -> None:
    """The data of a resumed run must have the checkpoint's classes, in its order."""
    stored = list(checkpoint.get("class_names") or [])
    stored_count = len(stored) or checkpoint_num_classes(checkpoint["model"])
    if stored_count != len(class_names):
        raise DataError(
            f"{path} was trained on {stored_count} classes, {config.data or config.dataset} has {len(class_names)}: "
            "resume on the run's own data, or start a new run (--finetune the checkpoint)"
        )
    if stored:
        check_class_names(stored, class_names, path, config.data or config.dataset)


# What a resumed run may change: where it runs, reads (a moved copy of its data, weights or teacher) and reports,
# and how long it trains (its learning-rate schedule then spans the new epoch count, as timm's --resume does); not
# what it trains: another learning rate, batch size or image size would be written into the config and silently
# not be the run's.
RESUME_MAY_CHANGE = frozenset({
    "epochs", "output_dir", "resume", "overwrite", "data", "finetune", "teacher_checkpoint", "download", "workers",
    "skip_bad_images", "device", "dist_timeout", "compile", "grad_checkpointing", "channels_last", "stop_after",
    "eval_every", "tensorboard", "progress",
})


def check_resumed_config(path: str, checkpoint: dict[str, Any], config: TrainConfig,
                         keys: Collection[str] | None = None) -> None:
    """A :class:`SwiftFormerError` naming the settings (of ``keys``, default all) that differ from the run's own
    when ``--resume`` asks for others than :data:`RESUME_MAY_CHANGE`."""
    saved, given = checkpoint["config"], config.to_dict()
    given = given if keys is None else {key: given[key] for key in keys}
    done = checkpoint["epoch"]
    if config.epochs <= done and config.epochs != saved.get("epochs"):  # nothing to train, and a config that lies
        raise SwiftFormerError(f"--epochs {config.epochs}: {path} has trained {done} epochs of its "
                               f"{saved.get('epochs')}; give more than {done} or leave --epochs unset")
    changed = [key for key in given if key in saved and key not in RESUME_MAY_CHANGE and saved[key] != given[key]]
    if changed:
        differences = ", ".join(f"{key} {given[key]!r} (the run's: {saved[key]!r})" for key in changed)
        raise SwiftFormerError(f"--resume {path} continues the run as it was configured, and this asks for "
                               f"{differences}; to train further or otherwise, start a new run with --finetune {path}")


def warn_about_scale(config: TrainConfig, world_size: int) -> None:
    """Warnings for a recipe used at a scale it was not written for (the ImageNet recipes on one process, short
    runs): the run would still train, less well than the user expects, without a word."""
    if config.repeated_aug > 1 and world_size == 1:
        log.warning("repeated_aug %d on one process: each epoch shows 1/%d of the images, %d augmented copies of "
                    "each, often in one batch (DeiT's sampler, written for many GPUs); --set repeated_aug=1 shows "
                    "every image once per epoch", config.repeated_aug, config.repeated_aug, config.repeated_aug)
    if config.warmup_epochs >= config.epochs:
        log.warning("warmup_epochs %g covers the whole run of %d epoch(s): the learning rate never reaches lr %g; "
                    "--set warmup_epochs=N with N below the epochs", config.warmup_epochs, config.epochs, config.lr)


def check_num_classes(config: TrainConfig, class_names: list[str]) -> int:
    """The class count to build the head with: the data's. A ``num_classes`` that differs is an error, also a
    larger one (its extra outputs would never be trained, and predictions could name classes that do not exist)."""
    if len(class_names) < 2:  # a one-class classifier answers that class for every image: top-1 100 %, loss 0
        raise DataError(f"{config.data or config.dataset} has one class ({class_names[0] if class_names else 'none'}):"
                        " a classifier learns to tell classes apart, give it two or more class folders")
    if config.num_classes is not None and config.num_classes != len(class_names):
        shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
        raise DataError(
            f"--num-classes {config.num_classes} does not match the data: {config.data or config.dataset} has "
            f"{len(class_names)} classes ({shown}); leave --num-classes out to take the data's"
        )
    return len(class_names)


def without_unfit_teacher(config: TrainConfig, asked: bool = False) -> TrainConfig:
    """``config`` without distillation when the released teacher (no ``teacher_checkpoint``) predicts other classes
    than the data has, e.g. the ImageNet recipe's RegNetY on one's own folder; decided from the teacher's config,
    before anything is downloaded. Distillation the user ``asked`` for (``--distillation``, ``--teacher``) is an
    error instead: it cannot be done as asked, and a run without it is not the one asked for. A teacher checkpoint
    of the wrong class count stays an error."""
    if config.distillation == "none" or config.teacher_checkpoint:
        return config
    teacher_classes = released_teacher_classes(config.teacher)
    if teacher_classes == config.num_classes:
        return config
    if asked:
        raise SwiftFormerError(
            f"--distillation {config.distillation} --teacher {config.teacher}: the teacher's released weights predict "
            f"{teacher_classes} classes, the data has {config.num_classes}; give --teacher-checkpoint of a teacher "
            "trained on these classes, or --distillation none")
    log.warning("training without distillation: the teacher %s predicts %d classes, the data has %d "
                "(give --teacher-checkpoint of a teacher trained on these classes to distil)",
                config.teacher, teacher_classes, config.num_classes)
    return dataclasses.replace(config, distillation="none")


# The run ---------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """The last epoch's log record (the same on every rank), the trained model and EMA of this rank, and whether
    this rank is the one that reports."""

    record: dict[str, Any]
    model: nn.Module
    ema: nn.Module | None
    is_main: bool = True


def main(config: TrainConfig, asked: Collection[str] = ()) -> TrainResult:
    """Train as ``config`` says, as one process or as one rank of a ``torchrun`` job. ``asked``: the settings the
    user gave (the command line's), which the run must not change: without ``img_size`` a QAT run takes its
    ``--finetune`` run's, without ``distillation``/``teacher`` a teacher of other classes is dropped with a warning."""
    dist_info = init_distributed(config.device, config.dist_timeout)
    try:
        return train(config, dist_info, asked)
    finally:
        cleanup()


def train(config: TrainConfig, dist_info: DistInfo, asked: Collection[str] = ()) -> TrainResult:
    config = absolute_paths(config)
    check_batch_size(config)
    if config.qat:
        qat.check_qat_config(config.finetune, config.resume)
    with RunDirectory(config.output_dir, dist_info, config.tensorboard, config.progress) as run_dir:
        try:
            return _train(config, dist_info, run_dir, asked)
        except KeyboardInterrupt:
            raise run_dir.interrupted(f"swiftformer train --resume {run_dir.path / 'last.pth'}") from None


def _train(config: TrainConfig, dist_info: DistInfo, run_dir: RunDirectory, asked: Collection[str]) -> TrainResult:
    replaced = check_run_directory(run_dir.path, config.resume, config.overwrite)
    config = dataclasses.replace(config, overwrite=False)  # saved so: a run started from this config replaces nothing
    config, datasets, resumed, finetuned = checked_run(config, dist_info, asked)
    train_loader, val_loader = build_loaders(datasets, config, dist_info)
    seed_everything(config.seed)  # the same on every rank: identical model and EMA initialisation
    training = build_training(config, datasets.class_names, resumed, finetuned, dist_info,
                              updates_per_epoch=len(train_loader) // config.accum_steps)

    # Resume, or start fresh with a per-rank seed (different augmentations on each rank)
    start = (0, 0, -1.0)  # epochs done, updates done, best top-1
    if resumed is not None:
        start = resume(resumed, config.resume, training, dist_info, config.epochs)
    else:
        seed_everything(config.seed + dist_info.rank)
    del resumed  # its tensors are in the model, EMA and optimizer now

    # records of epochs after the resumed checkpoint were never saved
    run_dir.start(config, replaced, keep=lambda record: record.get("epoch", 0) <= start[0],
                  resumed=f"epoch {start[0]}" if config.resume else None)
    if dist_info.is_main:
        log.info(
            "training %s on %d images (%d classes), %d process(es) x batch %d x %d accumulation = %d images per update",
            config.model, len(datasets.train), config.num_classes, dist_info.world_size, config.batch_size,
            config.accum_steps, dist_info.world_size * config.batch_size * config.accum_steps,
        )
    record = train_epochs(config, dist_info, run_dir, training, (train_loader, val_loader), datasets.class_names, start)
    return TrainResult(record, training.model, training.ema.module if training.ema is not None else None,
                       dist_info.is_main)


def checked_run(config: TrainConfig, dist_info: DistInfo,
                asked: Collection[str] = ()) -> tuple[TrainConfig, Datasets, dict | None, dict | None]:
    """Every check of the run against its checkpoints and data, before any training work: the config completed
    (class count, distillation, a QAT run's image size), the data, the ``--resume`` checkpoint and the
    ``--finetune`` run (if one of ours). ``asked``: see :func:`main`."""
    resumed = read_training_checkpoint(config.resume) if config.resume else None
    if resumed is not None:  # another model is said before the run's --finetune file is read (and blamed)
        check_resumed_config(config.resume, resumed, config, keys=("model",))
    finetuned = training_run(Path(config.finetune)) if config.finetune else None  # a run of ours, read once
    if config.qat and resumed is None and "img_size" not in asked and finetuned and finetuned["config"].get("img_size"):
        config = dataclasses.replace(config, img_size=finetuned["config"]["img_size"])  # quantize the model trained
    if finetuned is not None and finetuned["config"]["model"] != config.model:
        raise CheckpointError(f"--finetune {config.finetune} is a {finetuned['config']['model']} run, and this run "
                              f"builds a {config.model}: give --model {finetuned['config']['model']}")
    datasets = build_datasets(config)
    if resumed is not None:
        check_resumed_classes(config.resume, resumed, config, datasets.class_names)
    num_classes = check_num_classes(config, datasets.class_names)
    if config.qat:
        qat.check_run(config.finetune, finetuned, datasets.class_names, config.data or config.dataset, config.img_size,
                      config.lr)
    if dist_info.is_main and resumed is None:
        warn_about_scale(config, dist_info.world_size)
    config = dataclasses.replace(config, num_classes=num_classes)
    asked_teacher = bool({"distillation", "teacher"} & set(asked))
    if config.qat:  # QAT distils from its float model (qat.QatTraining), not from the recipe's teacher
        config = dataclasses.replace(config, distillation="none")
    else:
        config = without_unfit_teacher(config, asked_teacher)
    if resumed is not None:
        check_resumed_config(config.resume, resumed, config)
    return config, datasets, resumed, finetuned


@dataclass
class Training:
    """What the epochs train and with what: the model (and its DDP / compiled wrapper), EMA, loss, optimisation.
    ``reference``: the model whose top-1 evaluation compares against (QAT: the float model)."""

    model: nn.Module
    train_model: nn.Module
    ema: ModelEmaV3 | None
    criterion: nn.Module
    mixup: Mixup | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    options: StepOptions
    reference: nn.Module | None = None


def build_training(config: TrainConfig, class_names: list[str], resumed: dict | None, finetuned: dict | None,
                   dist_info: DistInfo, updates_per_epoch: int) -> Training:
    """The student (a resumed run's weights come from its checkpoint, filled in by :func:`resume`), its teacher,
    EMA, loss and optimisation (AdamW, a schedule stepped per update, loss scaling for fp16); QAT trains the fused
    model through fake quantization, distilled from the float model."""
    device, num_classes = dist_info.device, config.num_classes
    model = build_model(dataclasses.replace(config, finetune=None) if resumed else config, num_classes)
    if config.qat:  # the float model it refines is the --finetune file, also when resumed
        quantized = qat.prepare_training(model, build_model(config, num_classes) if resumed else model,
                                         config.img_size, device)
        model, teacher, distillation = quantized.model, quantized.teacher, (quantized.distillation, quantized.alpha)
        reference: nn.Module | None = quantized.teacher
    else:
        if finetuned is not None and resumed is None:
            matched = match_head_by_class_name(model, finetuned, class_names)
            if matched and dist_info.is_main:
                log.info("%s (%s)", matched, config.finetune)
        teacher, distillation, reference = None, (config.distillation, config.distillation_alpha), None
        if config.distillation != "none":
            teacher = build_teacher(config.teacher, config.teacher_checkpoint, num_classes, device)
            teacher.to(memory_format=memory_format(config.channels_last))
    model = model.to(device, memory_format=memory_format(config.channels_last))
    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)
    mixup = build_mixup(config, num_classes)
    criterion = DistillationLoss(base_criterion(mixup is not None, config.smoothing), teacher, *distillation,
                                 config.distillation_tau)
    optimizer = build_optimizer(model, config)
    return Training(
        model, train_model, build_ema(model, config), criterion, mixup, optimizer,
        build_scheduler(optimizer, config, updates_per_epoch),
        torch.amp.GradScaler(device.type, enabled=config.amp == "fp16"),
        StepOptions(config.amp, config.channels_last, config.accum_steps, config.clip_grad, config.clip_mode),
        reference,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, updates_per_epoch: int) -> Any:
    """timm's schedule (cosine by default) with warm-up, stepped per optimizer update."""
    scheduler, _ = create_scheduler_v2(
        optimizer, config.sched, num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        warmup_lr=config.warmup_lr, min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def train_epochs(config: TrainConfig, dist_info: DistInfo, run_dir: RunDirectory, training: Training,
                 loaders: tuple[Any, Any], class_names: list[str], start: tuple[int, int, float]) -> dict[str, Any]:
    """The epochs from ``start`` (epochs done, updates done, best top-1) on, each saved; returns the last record."""
    device, model, ema = dist_info.device, training.model, training.ema
    train_loader, val_loader = loaders
    start_epoch, step, best_top1 = start
    last_good = Path(config.resume) if config.resume else None  # the newest checkpoint free of NaN/Inf
    record: dict[str, Any] = {}
    end_epoch = config.epochs if config.stop_after is None else min(config.epochs, start_epoch + config.stop_after)
    if start_epoch >= config.epochs and dist_info.is_main:
        log.warning("%s has trained all %d epochs of its run: nothing to do (--epochs N above %d goes on, on a "
                    "schedule rebuilt for N)", config.resume, config.epochs, config.epochs)
    for epoch in range(start_epoch, end_epoch):
        train_loader.sampler.set_epoch(epoch)  # a new shuffle every epoch, on one process too
        try:
            stats, step = train_one_epoch(
                training.train_model, training.criterion, train_loader, training.optimizer, training.scheduler,
                training.scaler, device, epoch, step, ema=ema, mixup=training.mixup, options=training.options,
                runlog=run_dir.runlog, world_size=dist_info.world_size,
            )
        except TrainingDiverged as error:
            raise TrainingDiverged(f"{error}; {_last_good(last_good)}") from None
        if dist_info.enabled:  # BatchNorm statistics drift apart per rank: keep rank 0's everywhere
            broadcast_buffers(model)
            if ema is not None:
                broadcast_buffers(ema.module)
        record = {"epoch": epoch + 1, "step": step, "train_loss": stats.loss, "lr": stats.lr,
                  "images_per_second": stats.images_per_second, "epoch_seconds": stats.seconds}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == end_epoch:
            record.update(evaluate_epoch(config, training, val_loader, device, run_dir, epoch + 1))
        is_best = record.get("val_top1", -1.0) > best_top1
        best_top1 = max(best_top1, record.get("val_top1", -1.0))
        record["time"] = time.time()
        checkpoint = build_checkpoint(model, ema, training.optimizer, training.scheduler, training.scaler, epoch + 1,
                                      step, best_top1, config, class_names, all_gather_object(rng_state()))
        check_finite(checkpoint, epoch + 1, step, last_good)  # on every rank, so all of them stop together
        if dist_info.is_main:
            log.info("epoch %d/%d  %s", epoch + 1, config.epochs, _summary(record))
        run_dir.record(record)
        run_dir.save(checkpoint, is_best, f"epoch {epoch + 1}")  # then the log: it never claims an unsaved epoch
        last_good = run_dir.path / "last.pth"
    if start_epoch < end_epoch < config.epochs and dist_info.is_main:
        log.info("stopped after epoch %d of %d (stop_after %d): --resume %s goes on", end_epoch, config.epochs,
                 config.stop_after, run_dir.path / "last.pth")
    return record


def evaluate_epoch(config: TrainConfig, training: Training, val_loader: Any, device: torch.device,
                   run_dir: RunDirectory, epoch: int) -> dict[str, Any]:
    """The log entries of the model's and the EMA's validation after ``epoch`` (1-based)."""
    entries: dict[str, Any] = {}
    for prefix, module in (("val", training.model), ("ema", training.ema.module if training.ema is not None else None)):
        if module is None:
            continue
        result = evaluate(module, val_loader, device, config.num_classes, amp=config.amp,
                          channels_last=config.channels_last, runlog=run_dir.runlog, description=f"{prefix} {epoch}",
                          reference=training.reference)
        entries.update({f"{prefix}_top1": result.top1, f"{prefix}_top5": result.top5, f"{prefix}_loss": result.loss,
                        f"{prefix}_count": result.count})
        if result.agreement is not None:  # QAT: what the int8 export will be checked on
            entries[f"{prefix}_fp32_agreement"] = result.agreement
            qat.warn_if_drifting(result.agreement)
    return entries


def check_finite(checkpoint: dict[str, Any], epoch: int, step: int, last_good: Path | None) -> None:
    """A :class:`TrainingDiverged` naming the tensors of ``checkpoint`` that hold NaN or Inf: it is not saved."""
    bad = nonfinite_entries(checkpoint)
    if bad:
        raise TrainingDiverged(
            f"training diverged: {bad[0]}{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''} hold NaN "
            f"or Inf after epoch {epoch} (update {step}); not saved, {_last_good(last_good)}"
        )


def read_training_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from; a :class:`CheckpointError` if it is not one of our runs."""
    checkpoint = safe_torch_load(path)
    needed = ("config", "model", "optimizer", "scheduler", "scaler", "epoch", "step", "best_top1", "rng")
    missing = [k for k in needed if k not in checkpoint] if isinstance(checkpoint, dict) else list(needed)
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint (no {', '.join(missing)}); use --finetune for weights")
    return checkpoint


def resume(checkpoint: dict[str, Any], path: str, training: Training, dist_info: DistInfo,
           epochs: int) -> tuple[int, int, float]:
    """Restore a run's state from its checkpoint; returns ``(epochs done, updates done, best top-1)``. With another
    ``epochs`` than the run's, the schedule is the one built for it rather than the run's own."""
    ema, optimizer, scheduler, scaler = training.ema, training.optimizer, training.scheduler, training.scaler
    load_state = qat.load_qat_state if checkpoint["config"].get("qat") else load_native_state_dict
    load_state(training.model, checkpoint["model"])  # a CheckpointError naming the tensor if the model differs
    if ema is not None:
        if checkpoint.get("ema") is None:
            raise CheckpointError(f"{path} has no EMA weights but this run keeps an EMA (ema_decay={ema.decay})")
        load_native_state_dict(ema.module, checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduled = checkpoint["config"]["epochs"]
    if scheduled == epochs:
        scheduler.load_state_dict(checkpoint["scheduler"])
    elif dist_info.is_main:  # the schedule built for the new count goes on from the run's update
        log.warning("%s was scheduled for %d epochs: its learning-rate schedule now spans %d, from update %d on",
                    path, scheduled, epochs, checkpoint["step"])
    scaler.load_state_dict(checkpoint["scaler"])
    restore_rng(checkpoint["rng"], dist_info, path, checkpoint["config"]["seed"] + checkpoint["epoch"] * 1000)
    log.info("resumed %s after epoch %d (update %d)", path, checkpoint["epoch"], checkpoint["step"])
    return int(checkpoint["epoch"]), int(checkpoint["step"]), float(checkpoint["best_top1"])


def _loss(value: float) -> str:
    """Four decimals, or two significant digits for a loss below 0.001 (a QAT run's 2.5e-06 is not 0.0000)."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2g}"


def _summary(record: dict[str, Any]) -> str:
    parts = [f"loss {_loss(record['train_loss'])}", f"lr {record['lr']:.3g}", f"{record['images_per_second']:.1f} img/s"]
    for prefix, name in (("val", "top-1"), ("ema", "EMA top-1")):
        if f"{prefix}_top1" in record:
            parts.append(f"{name} {record[f'{prefix}_top1']:.2f} %")
    if "val_fp32_agreement" in record:
        parts.append(f"agreement with fp32 {record['val_fp32_agreement']:.2f} %")
    return "  ".join(parts)
