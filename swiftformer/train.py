"""Train a SwiftFormer: ``main(config)`` reads top to bottom.

Single process (CPU or one GPU)::

    swiftformer train --config swiftformer_xs --data /data/imagenet --output-dir runs/xs

One node, 8 GPUs; many nodes (run the same command on each, or see ``scripts/slurm_train.sh``)::

    torchrun --nproc_per_node=8 -m swiftformer train --config swiftformer_xs --data /data/imagenet
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m swiftformer train --config swiftformer_xs --data /data/imagenet

A run directory holds ``config.yaml`` (the resolved recipe), ``log.jsonl`` (one record per epoch),
``last.pth`` and ``best.pth`` (plain-dict checkpoints, ``torch.load(weights_only=True)``-safe, written
atomically) and ``curves.png``. ``--resume RUN/last.pth`` continues exactly where the run stopped.
``--qat --finetune RUN/best.pth`` fine-tunes the fused model through int8 fake quantization (:mod:`swiftformer.qat`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import qat
from .checkpoint import (
    atomic_torch_save, checkpoint_num_classes, load_native_state_dict, safe_torch_load,
)
from .data import build_datasets, build_loaders
from .distributed import DistInfo, all_gather_object, broadcast_buffers, cleanup, init_distributed
from .engine import StepOptions, TrainingDiverged, evaluate, memory_format, train_one_epoch
from .errors import CheckpointError, DataError, SwiftFormerError
from .inference import check_class_names, training_run
from .losses import DistillationLoss, base_criterion, build_teacher, released_teacher_classes
from .pretrained import create_model
from .recipes import TrainConfig, save_config
from .runlog import RunLog, plot_curves

log = logging.getLogger(__name__)


# RNG state as tensors and plain values, so checkpoints load with weights_only=True ---------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states of this process."""
    version, python_state, gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(numpy_keys.astype(np.int64)),
        "numpy_pos": int(numpy_pos),
        "numpy_has_gauss": int(numpy_has_gauss),
        "numpy_gauss": float(numpy_gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
RUN_FILES = ("last.pth", "best.pth", "log.jsonl")  # a folder with one of them holds at least one saved epoch


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its run directory and file paths absolute, so the saved config means the same from any
    working directory (``eval`` of a run elsewhere, ``--resume`` of a copied run)."""
    paths = {name: os.path.abspath(getattr(config, name))
             for name in ("output_dir", "data", "resume", "finetune", "teacher_checkpoint") if getattr(config, name)}
    return dataclasses.replace(config, **paths)


def check_run_directory(output_dir: Path, resume: str | Path | None, overwrite: bool | None) -> list[Path]:
    """The files of an earlier run in ``output_dir`` that ``overwrite`` lets this new run delete (before its first
    write, after every check); without it a new run there is an error: its checkpoints would be replaced and its
    log appended to. ``resume`` continues the run in place (in another run's folder it needs ``overwrite`` too).
    ``overwrite=None``: the command has no such option (detection and segmentation)."""
    existing = [output_dir / name for name in RUN_FILES if (output_dir / name).exists()]
    if not existing or (resume and Path(resume).absolute().parent == output_dir.absolute()):
        return []  # a folder of a run that stopped before its first checkpoint holds nothing to lose
    if not overwrite:
        replace = ", --overwrite to replace it" if overwrite is False else ""
        raise SwiftFormerError(
            f"{output_dir} already holds a run ({', '.join(path.name for path in existing)}): --resume "
            f"{output_dir / 'last.pth'} to continue it{replace}, or give another --output-dir"
        )
    curves = output_dir / "curves.png"
    return existing + [curves] * curves.exists()


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


def check_resumed_config(path: str, checkpoint: dict[str, Any], config: TrainConfig) -> None:
    """A :class:`SwiftFormerError` naming the settings that differ from the run's own when ``--resume`` asks
    for others than :data:`RESUME_MAY_CHANGE`."""
    saved, given = checkpoint["config"], config.to_dict()
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
    if config.num_classes is not None and config.num_classes != len(class_names):
        shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
        raise DataError(
            f"--num-classes {config.num_classes} does not match the data: {config.data or config.dataset} has "
            f"{len(class_names)} classes ({shown}); leave --num-classes out to take the data's"
        )
    return len(class_names)


def without_unfit_teacher(config: TrainConfig) -> TrainConfig:
    """``config`` without distillation when the released teacher (no ``teacher_checkpoint``) predicts other classes
    than the data has, e.g. the ImageNet recipe's RegNetY on one's own folder; decided from the teacher's config,
    before anything is downloaded. A teacher checkpoint of the wrong class count stays an error."""
    if config.distillation == "none" or config.teacher_checkpoint:
        return config
    teacher_classes = released_teacher_classes(config.teacher)
    if teacher_classes == config.num_classes:
        return config
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


def main(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says, as one process or as one rank of a ``torchrun`` job."""
    dist_info = init_distributed(config.device, config.dist_timeout)
    try:
        return train(config, dist_info)
    finally:
        cleanup()


def train(config: TrainConfig, dist_info: DistInfo) -> TrainResult:
    config = absolute_paths(config)
    if config.qat:
        qat.check_qat_config(config.finetune, config.resume)
    device, output_dir = dist_info.device, Path(config.output_dir)
    replaced = check_run_directory(output_dir, config.resume, config.overwrite)
    config = dataclasses.replace(config, overwrite=False)  # saved so: a run started from this config replaces nothing
    if dist_info.is_main:
        log.info("run directory: %s", output_dir)
    resumed = read_training_checkpoint(config.resume) if config.resume else None
    finetuned = training_run(Path(config.finetune)) if config.finetune else None  # a run of ours, read once
    if finetuned is not None and finetuned["config"]["model"] != config.model:
        raise CheckpointError(f"--finetune {config.finetune} is a {finetuned['config']['model']} run, and this run "
                              f"builds a {config.model}: give --model {finetuned['config']['model']}")
    seed_everything(config.seed)  # the same on every rank: identical model and EMA initialisation

    # Data and the checks against it (before any training work), model, EMA, teacher
    datasets = build_datasets(config)
    if resumed is not None:
        check_resumed_classes(config.resume, resumed, config, datasets.class_names)
    num_classes = check_num_classes(config, datasets.class_names)
    if config.qat and config.finetune:
        qat.check_teacher_classes(config.finetune, finetuned, datasets.class_names, config.data or config.dataset)
        qat.warn_if_resized(config.finetune, finetuned, config.img_size)
    if config.qat:
        qat.warn_if_fast(config.lr)
    if dist_info.is_main and resumed is None:
        warn_about_scale(config, dist_info.world_size)
    config = dataclasses.replace(config, num_classes=num_classes)
    config = dataclasses.replace(config, distillation="none") if config.qat else without_unfit_teacher(config)
    if resumed is not None:
        check_resumed_config(config.resume, resumed, config)
    # a resumed run takes every weight from its checkpoint, the --finetune file is not read again (but by QAT, whose
    # teacher it is)
    model = build_model(dataclasses.replace(config, finetune=None) if resumed else config, num_classes)
    if finetuned is not None and resumed is None and not config.qat:  # QAT checks the classes are the same
        matched = match_head_by_class_name(model, finetuned, datasets.class_names)
        if matched and dist_info.is_main:
            log.info("%s (%s)", matched, config.finetune)
    teacher = None
    if config.qat:  # the fused model through int8 fake quantization; a resumed run's state fills it below
        float_model = build_model(config, num_classes) if resumed else model
        teacher = qat.float_teacher(float_model).to(device)
        model = qat.prepare_qat(model.to(device), config.img_size)
    elif config.distillation != "none":
        teacher = build_teacher(config.teacher, config.teacher_checkpoint, num_classes, device)
        teacher.to(memory_format=memory_format(config.channels_last))
    model = model.to(device, memory_format=memory_format(config.channels_last))
    ema = build_ema(model, config)
    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)

    # Optimisation: AdamW, cosine schedule stepped per update, loss scaling for fp16, mixup, loss
    train_loader, val_loader = build_loaders(datasets, config, dist_info)
    updates_per_epoch = len(train_loader) // config.accum_steps
    optimizer = build_optimizer(model, config)
    scheduler, _ = create_scheduler_v2(
        optimizer, config.sched, num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        warmup_lr=config.warmup_lr, min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    mixup = build_mixup(config, num_classes)
    criterion = DistillationLoss(
        base_criterion(mixup is not None, config.smoothing), teacher, "soft" if config.qat else config.distillation,
        1.0 if config.qat else config.distillation_alpha, config.distillation_tau,
    )
    options = StepOptions(config.amp, config.channels_last, config.accum_steps, config.clip_grad, config.clip_mode)

    # Resume, or start fresh with a per-rank seed (different augmentations on each rank)
    start_epoch, step, best_top1 = 0, 0, -1.0
    last_good = Path(config.resume) if config.resume else None  # the newest checkpoint free of NaN/Inf
    if resumed is not None:
        start_epoch, step, best_top1 = resume(resumed, config.resume, model, ema, optimizer, scheduler, scaler,
                                              dist_info, config.epochs)
    else:
        seed_everything(config.seed + dist_info.rank)
    del resumed  # its tensors are in the model, EMA and optimizer now

    runlog = RunLog(output_dir, enabled=dist_info.is_main, tensorboard=config.tensorboard, progress=config.progress)
    if dist_info.is_main:
        for path in replaced:
            path.unlink()
        runlog.keep_epochs(start_epoch)  # records of epochs after the resumed checkpoint were never saved
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
        log.info(
            "training %s on %d images (%d classes), %d process(es) x batch %d x %d accumulation = %d images per update",
            config.model, len(datasets.train), num_classes, dist_info.world_size, config.batch_size, config.accum_steps,
            dist_info.world_size * config.batch_size * config.accum_steps,
        )
    record: dict[str, Any] = {}
    end_epoch = config.epochs if config.stop_after is None else min(config.epochs, start_epoch + config.stop_after)
    if start_epoch >= config.epochs and dist_info.is_main:
        log.warning("%s has trained all %d epochs of its run: nothing to do (--epochs N above %d goes on, on a "
                    "schedule rebuilt for N)", config.resume, config.epochs, config.epochs)
    for epoch in range(start_epoch, end_epoch):
        train_loader.sampler.set_epoch(epoch)  # a new shuffle every epoch, on one process too
        try:
            stats, step = train_one_epoch(
                train_model, criterion, train_loader, optimizer, scheduler, scaler, device, epoch, step,
                ema=ema, mixup=mixup, options=options, runlog=runlog, world_size=dist_info.world_size,
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
            for prefix, module in (("val", model), ("ema", ema.module if ema is not None else None)):
                if module is not None:
                    result = evaluate(module, val_loader, device, num_classes, amp=config.amp,
                                      channels_last=config.channels_last, runlog=runlog, description=f"{prefix} {epoch + 1}",
                                      reference=teacher if config.qat else None)
                    record.update({f"{prefix}_top1": result.top1, f"{prefix}_top5": result.top5,
                                   f"{prefix}_loss": result.loss, f"{prefix}_count": result.count})
                    if result.agreement is not None:  # QAT: what the int8 export will be checked on
                        record[f"{prefix}_fp32_agreement"] = result.agreement
                        qat.warn_if_drifting(result.agreement)
        is_best = record.get("val_top1", -1.0) > best_top1
        best_top1 = max(best_top1, record.get("val_top1", -1.0))
        record["time"] = time.time()
        rng = all_gather_object(rng_state())
        checkpoint = build_checkpoint(model, ema, optimizer, scheduler, scaler, epoch + 1, step, best_top1,
                                      config, datasets.class_names, rng)
        bad = nonfinite_entries(checkpoint)  # on every rank, so all of them stop together
        if bad:
            raise TrainingDiverged(
                f"training diverged: {bad[0]}{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''} hold NaN "
                f"or Inf after epoch {epoch + 1} (update {step}); not saved, {_last_good(last_good)}"
            )
        if dist_info.is_main:
            log.info("epoch %d/%d  %s", epoch + 1, config.epochs, _summary(record))
            if is_best:
                atomic_torch_save(checkpoint, output_dir / "best.pth")
            atomic_torch_save(checkpoint, output_dir / "last.pth")
        runlog.write(record)  # only once the checkpoint holds the epoch: the log never claims an unsaved one
        last_good = output_dir / "last.pth"
    if start_epoch < end_epoch < config.epochs and dist_info.is_main:
        log.info("stopped after epoch %d of %d (stop_after %d): --resume %s goes on", end_epoch, config.epochs,
                 config.stop_after, output_dir / "last.pth")
    if dist_info.is_main and runlog.path.is_file():
        plot_curves(runlog.path, output_dir / "curves.png")
    runlog.close()
    return TrainResult(record, model, ema.module if ema is not None else None, dist_info.is_main)


def read_training_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from; a :class:`CheckpointError` if it is not one of our runs."""
    checkpoint = safe_torch_load(path)
    needed = ("config", "model", "optimizer", "scheduler", "scaler", "epoch", "step", "best_top1", "rng")
    missing = [k for k in needed if k not in checkpoint] if isinstance(checkpoint, dict) else list(needed)
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint (no {', '.join(missing)}); use --finetune for weights")
    return checkpoint


def resume(
    checkpoint: dict[str, Any], path: str, model: nn.Module, ema: ModelEmaV3 | None, optimizer: torch.optim.Optimizer,
    scheduler: Any, scaler: torch.amp.GradScaler, dist_info: DistInfo, epochs: int,
) -> tuple[int, int, float]:
    """Restore a run's state from its checkpoint; returns ``(epochs done, updates done, best top-1)``. With another
    ``epochs`` than the run's, the schedule is the one built for it rather than the run's own."""
    load_state = qat.load_qat_state if checkpoint["config"].get("qat") else load_native_state_dict
    load_state(model, checkpoint["model"])  # a CheckpointError naming the tensor if the model differs
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
    states = checkpoint["rng"]
    if len(states) == dist_info.world_size:
        set_rng_state(states[dist_info.rank])
    else:
        log.warning("%s was written by %d process(es), this run has %d: augmentations restart from fresh seeds",
                    path, len(states), dist_info.world_size)
        seed_everything(checkpoint["config"]["seed"] + checkpoint["epoch"] * 1000 + dist_info.rank)
    log.info("resumed %s after epoch %d (update %d)", path, checkpoint["epoch"], checkpoint["step"])
    return int(checkpoint["epoch"]), int(checkpoint["step"]), float(checkpoint["best_top1"])


def _summary(record: dict[str, Any]) -> str:
    parts = [f"loss {record['train_loss']:.4f}", f"lr {record['lr']:.3g}", f"{record['images_per_second']:.1f} img/s"]
    for prefix, name in (("val", "top-1"), ("ema", "EMA top-1")):
        if f"{prefix}_top1" in record:
            parts.append(f"{name} {record[f'{prefix}_top1']:.2f} %")
    if "val_fp32_agreement" in record:
        parts.append(f"agreement with fp32 {record['val_fp32_agreement']:.2f} %")
    return "  ".join(parts)
