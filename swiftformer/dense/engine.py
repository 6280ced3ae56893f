"""Training and evaluation of the dense models: one iteration-driven loop for detection and segmentation.

Single process::

    swiftformer segment train --config pennfudan_semantic_fpn_xs --set data=/tmp/pennfudan/ade
DDP (one process per GPU; the batch size is per process)::

    torchrun --nproc_per_node 8 -m swiftformer detect train --config maskrcnn_1x_swiftformer_l1 --set data=/coco

Epoch-based recipes (Mask R-CNN 1×) are converted to iterations; the learning rate follows a per-iteration
warm-up then step or poly decay. The run directory (:mod:`swiftformer.rundir`) and checkpoint are classification's:
``config.yaml``, ``log.jsonl``, ``last.pth`` and ``best.pth`` (best ``bbox_AP`` / ``mIoU``), plain dicts
(``model``, ``ema``, ``optimizer``, ``scheduler``, ``scaler``, ``epoch``, ``step``, ``config``,
``class_names``, ``rng``, the best metric) written atomically; a resumed run continues at the exact batch it
stopped at (:class:`TrainSampler`). Checkpoints of older versions (``last.pt``: ``lr_scheduler``,
``iteration``, ``classes``) still load (:func:`read_checkpoint`).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint import load_native_state_dict, safe_torch_load
from ..data import Datasets, loader_workers
from ..distributed import DistInfo, ShardSampler, all_gather_object, cleanup, init_distributed
from ..engine import AMP_DTYPES, autocast, unwrap_model
from ..errors import DataError, SwiftFormerError
from ..rundir import RunDirectory, check_run_directory, restore_rng, rng_state, seed_everything
from ..runlog import RunLog
from .config import DenseConfig, config_from_dict
from .data import CocoInstances, TrainSampler, collate_detection, collate_eval_segmentation, dense_datasets
from .metrics import ConfusionMatrix, coco_evaluate, detections_to_coco, gather_detections

log = logging.getLogger(__name__)
from .models import build_maskrcnn, build_semantic_fpn


# Building --------------------------------------------------------------------------------------------------
def build_task_model(config: DenseConfig, num_classes: int) -> nn.Module:
    """Mask R-CNN / Faster R-CNN (``num_classes`` objects) or semantic FPN (``num_classes`` labels)."""
    if config.task == "detection":
        return build_maskrcnn(
            config.model, num_classes, config.pretrained, config.masks, config.out_channels, config.min_size,
            config.max_size, config.frozen_stages, config.freeze_bn, config.drop_path, **config.detector,
        )
    return build_semantic_fpn(
        config.model, num_classes, config.pretrained, config.out_channels, config.head_channels,
        frozen_stages=config.frozen_stages, freeze_bn=config.freeze_bn, drop_path_rate=config.drop_path,
    )


def build_optimizer(model: nn.Module, config: DenseConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation parameters (1-d tensors)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(config: DenseConfig, total_iters: int, iters_per_unit: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each iteration: linear warm-up, then step or poly decay."""
    milestones = [m * iters_per_unit for m in config.milestones]
    floor = config.min_lr / config.lr if config.lr else 0.0

    def factor(iteration: int) -> float:
        if config.sched == "step":
            decay = config.gamma ** sum(iteration >= m for m in milestones)
        else:  # poly (DenseConfig checks sched against config.SCHEDULES)
            decay = (1 - min(iteration, total_iters) / total_iters) ** config.power * (1 - floor) + floor
        if iteration < config.warmup_iters:
            decay *= config.warmup_ratio + (1 - config.warmup_ratio) * iteration / config.warmup_iters
        return decay

    return factor


# Steps -----------------------------------------------------------------------------------------------------
def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of nested lists / tuples / dicts moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def training_loss(task: str, model: nn.Module, images: Any, targets: Any, ignore_index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts: torchvision's detector losses, or pixel cross-entropy with ignore index."""
    if task == "detection":
        parts = model(images, targets)
        return sum(parts.values()), parts
    loss = F.cross_entropy(model(images), targets, ignore_index=ignore_index)
    return loss, {"loss_ce": loss}


@torch.no_grad()
def evaluate_detection(
    model: nn.Module, loader: DataLoader, dataset: CocoInstances, device: torch.device, amp_dtype: torch.dtype | None,
    runlog: RunLog | None = None,
) -> dict[str, float]:
    """COCO box (and mask) AP of ``model`` on ``dataset`` (sharded over ranks by ``loader``)."""
    model.eval()
    results = []
    progress = (runlog or RunLog(".", enabled=False)).progress(loader, len(loader), "eval")
    for images, targets in progress:
        with autocast(device, amp_dtype):
            outputs = model(to_device(images, device))
        ids = [int(t["image_id"]) for t in targets]
        outputs = [{k: v.float() if v.is_floating_point() else v for k, v in o.items()} for o in outputs]  # bf16 under AMP
        results += detections_to_coco(outputs, ids, dataset.category_ids)
    iou_types = ("bbox", "segm") if dataset.masks else ("bbox",)
    return coco_evaluate(dataset.coco, gather_detections(results), iou_types, image_ids=dataset.ids)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module, loader: DataLoader, num_classes: int, ignore_index: int, device: torch.device,
    amp_dtype: torch.dtype | None, runlog: RunLog | None = None,
) -> dict[str, Any]:
    """mIoU, mean accuracy and pixel accuracy at each label's full resolution (logits upsampled to it)."""
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index)
    progress = (runlog or RunLog(".", enabled=False)).progress(loader, len(loader), "eval")
    for images, labels in progress:
        for image, label in zip(images, labels):
            with autocast(device, amp_dtype):
                logits = model(image[None].to(device))
            logits = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)
            confusion.update(logits.argmax(1)[0].cpu(), label)
    confusion.reduce()
    return confusion.compute()


# The run ---------------------------------------------------------------------------------------------------
def make_loaders(config: DenseConfig, datasets: Datasets, dist_info: DistInfo) -> tuple[DataLoader | None, TrainSampler | None, DataLoader]:
    detection = config.task == "detection"
    workers = loader_workers(config.workers)
    val_loader = DataLoader(
        datasets.val, batch_size=config.batch_size if detection else 1, num_workers=workers,
        sampler=ShardSampler(len(datasets.val), dist_info.rank, dist_info.world_size),
        collate_fn=collate_detection if detection else collate_eval_segmentation,
    )
    if datasets.train is None:
        return None, None, val_loader
    sampler = TrainSampler(len(datasets.train), dist_info.rank, dist_info.world_size, config.seed)
    train_loader = DataLoader(
        datasets.train, batch_size=config.batch_size, sampler=sampler, num_workers=workers, drop_last=True,
        collate_fn=collate_detection if detection else None, persistent_workers=False,
    )
    if len(sampler) < config.batch_size:
        raise DataError(f"{len(datasets.train)} training samples cannot fill one batch of {config.batch_size} per process")
    return train_loader, sampler, val_loader


def evaluate(model: nn.Module, config: DenseConfig, datasets: Datasets, val_loader: DataLoader,
             device: torch.device, runlog: RunLog | None = None) -> dict[str, Any]:
    """The task's validation metrics."""
    amp_dtype = AMP_DTYPES[config.amp]
    if config.task == "detection":
        return evaluate_detection(model, val_loader, datasets.val, device, amp_dtype, runlog)
    return evaluate_segmentation(model, val_loader, config.num_classes, config.ignore_index, device, amp_dtype, runlog)


def summary(metrics: dict[str, Any]) -> str:
    """One line of the headline numbers."""
    keys = [k for k in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75", "mIoU", "mAcc", "pixel_acc") if k in metrics]
    return "  ".join(f"{k} {metrics[k]:.2f}" for k in keys)


def train(config: DenseConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """Train ``config`` (under ``torchrun`` on every rank); returns the final validation metrics."""
    dist_info = init_distributed(config.device)
    try:
        with RunDirectory(config.output_dir, dist_info) as run_dir:
            return _train(config, dist_info, resume, run_dir)
    finally:
        cleanup()


@dataclass
class Optimisation:
    """What one training iteration updates."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def _train(config: DenseConfig, dist_info: DistInfo, resume: str | Path | None,
           run_dir: RunDirectory) -> dict[str, Any]:
    # a new run would replace an earlier run's checkpoints and append to its log
    check_run_directory(run_dir.path, resume, overwrite=None)
    seed_everything(config.seed + dist_info.rank)  # the augmentations draw from Python's RNG
    datasets = dense_datasets(config)
    num_classes = len(datasets.class_names) if config.task == "detection" else config.num_classes
    model = build_task_model(config, num_classes).to(dist_info.device)
    if dist_info.enabled and config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_loader, sampler, val_loader = make_loaders(config, datasets, dist_info)
    iters_per_epoch = len(sampler) // config.batch_size
    total_iters = config.iterations or config.epochs * iters_per_epoch
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config, total_iters, 1 if config.by_iteration else iters_per_epoch))
    scaler = torch.amp.GradScaler(dist_info.device.type, enabled=AMP_DTYPES[config.amp] == torch.float16)
    training = Optimisation(model, optimizer, scheduler, scaler)
    iteration, best = resume_run(resume, training, config, dist_info, run_dir) if resume is not None else (0, -math.inf)
    # records past the resumed checkpoint were never saved
    run_dir.start(config, [], keep=lambda record: record.get("iteration", 0) <= iteration,
                  resumed=f"iteration {iteration}" if resume is not None else None)
    if dist_info.is_main:
        log.info("%s: %s, %d train / %d val images, %d iterations of %dx%d (%d per epoch)", config.task, config.model,
                 len(datasets.train), len(datasets.val), total_iters, config.batch_size, dist_info.world_size,
                 iters_per_epoch)
    try:
        return _loop(config, dist_info, run_dir, training, datasets, (train_loader, sampler, val_loader),
                     iteration, best, total_iters)
    except KeyboardInterrupt:
        command = "detect" if config.task == "detection" else "segment"
        raise run_dir.interrupted(f"swiftformer {command} train --config {run_dir.path / 'config.yaml'} "
                                  f"--resume {run_dir.path / 'last.pth'}") from None


def resume_run(path: str | Path, training: Optimisation, config: DenseConfig, dist_info: DistInfo,
               run_dir: RunDirectory) -> tuple[int, float]:
    """The state of checkpoint ``path`` into ``training`` and this rank's generators; returns the iterations done
    and the best headline metric so far."""
    checkpoint = read_checkpoint(path)
    load_native_state_dict(training.model, checkpoint["model"])
    training.optimizer.load_state_dict(checkpoint["optimizer"])
    training.scheduler.load_state_dict(checkpoint["scheduler"])
    training.scaler.load_state_dict(checkpoint["scaler"])
    iteration = int(checkpoint["step"])
    if checkpoint.get("rng"):  # checkpoints of 0.1 hold none
        restore_rng(checkpoint["rng"], dist_info, path, config.seed + iteration)
    run_dir.record({"event": "resume", "from": str(path), "iteration": iteration})
    return iteration, float(checkpoint.get(f"best_{HEADLINE_METRIC[config.task]}", -math.inf))


def _loop(config: DenseConfig, dist_info: DistInfo, run_dir: RunDirectory, training: Optimisation,
          datasets: Datasets, loaders: tuple[DataLoader, TrainSampler, DataLoader], iteration: int, best: float,
          total_iters: int) -> dict[str, Any]:
    """Iterations from ``iteration`` to ``total_iters``: a log record every ``log_interval``, evaluation and a
    checkpoint every ``eval_interval``. The loss stays on the device between records (no sync per step)."""
    device, amp_dtype, headline = dist_info.device, AMP_DTYPES[config.amp], HEADLINE_METRIC[config.task]
    train_loader, sampler, val_loader = loaders
    iters_per_epoch = len(sampler) // config.batch_size
    eval_every = config.eval_interval * (1 if config.by_iteration else iters_per_epoch)
    model, optimizer = training.model, training.optimizer
    ddp_model = DistributedDataParallel(model) if dist_info.enabled else model
    metrics: dict[str, Any] = {}
    loss_sum, loss_count, start = torch.zeros((), device=device), 0, time.perf_counter()
    while iteration < total_iters:
        epoch, offset = divmod(iteration, iters_per_epoch)
        sampler.set_epoch(epoch, offset * config.batch_size)
        steps = min(iters_per_epoch - offset, total_iters - iteration)
        progress = run_dir.runlog.progress(islice(train_loader, steps), steps, f"epoch {epoch + 1}")
        ddp_model.train()
        for batch in progress:
            images, targets = to_device(batch, device)
            with autocast(device, amp_dtype):
                loss, parts = training_loss(config.task, ddp_model, images, targets, config.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            training.scaler.scale(loss).backward()
            if config.clip_grad is not None:
                training.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            training.scaler.step(optimizer)
            training.scaler.update()
            training.scheduler.step()
            iteration += 1
            loss_sum, loss_count = loss_sum + loss.detach().float(), loss_count + 1
            evaluating = iteration % eval_every == 0 or iteration == total_iters
            if iteration % config.log_interval == 0 or (evaluating and loss_count):
                mean_loss = checked_mean(loss_sum, loss_count, iteration)
                progress.update(loss=mean_loss, lr=optimizer.param_groups[0]["lr"])
                if iteration % config.log_interval == 0:
                    run_dir.record({"iteration": iteration, "epoch": epoch, "train_loss": mean_loss,
                                    "lr": optimizer.param_groups[0]["lr"], **{k: v.item() for k, v in parts.items()},
                                    "seconds": time.perf_counter() - start})
                    loss_sum, loss_count = torch.zeros((), device=device), 0
            if evaluating:
                metrics = evaluate(ddp_model, config, datasets, val_loader, device, run_dir.runlog)
                ddp_model.train()
                run_dir.record({"iteration": iteration, "epoch": epoch, **metrics,
                                "seconds": time.perf_counter() - start})
                is_best = metrics.get(headline, -math.inf) > best
                best = max(best, metrics.get(headline, -math.inf))
                checkpoint = build_checkpoint(model, optimizer, training.scheduler, training.scaler,
                                              iteration // iters_per_epoch, iteration, best, config, datasets, metrics,
                                              all_gather_object(rng_state()))
                if dist_info.is_main:
                    log.info("iteration %d/%d: %s", iteration, total_iters, summary(metrics))
                run_dir.save(checkpoint, is_best, f"iteration {iteration}")  # then the log records it holds
    return metrics


def checked_mean(loss_sum: torch.Tensor, count: int, iteration: int) -> float:
    """The mean of the last ``count`` losses (one device sync); an error if one of them was NaN or infinite."""
    value = loss_sum.item() / count
    if not math.isfinite(value):
        raise SwiftFormerError(f"training diverged: the loss became {value} within iterations {iteration - count + 1}"
                               f"-{iteration}; lower lr or use clip_grad")
    return value


# Checkpoints: classification's layout --------------------------------------------------------------------
HEADLINE_METRIC = {"detection": "bbox_AP", "segmentation": "mIoU"}  # what best.pth is the best of
# Keys of the dense checkpoints before 0.2 (``last.pt``) -> classification's names
LEGACY_KEYS = {"lr_scheduler": "scheduler", "iteration": "step"}


def build_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler, epoch: int,
    step: int, best: float, config: DenseConfig, datasets: Datasets, metrics: dict[str, Any], rng: list[dict[str, Any]],
) -> dict[str, Any]:
    """The plain dict ``--resume``, ``eval`` and ``predict`` read; the keys of :func:`swiftformer.train.build_checkpoint`."""
    return {
        "model": unwrap_model(model).state_dict(),
        "ema": None,  # the dense runs keep no EMA
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,  # epochs completed
        "step": step,  # iterations completed
        f"best_{HEADLINE_METRIC[config.task]}": best,
        "config": config.to_dict(),
        "class_names": list(datasets.class_names),
        "category_ids": list(getattr(datasets.val, "category_ids", [])),  # detection: the COCO id of each label
        "rng": rng,  # one entry per rank
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A dense training checkpoint in today's layout; older ones (``lr_scheduler``, ``iteration``, ``classes``)
    are mapped to it."""
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "model" not in checkpoint:
        raise SwiftFormerError(f"{path} is not a dense training checkpoint (no 'config' and 'model' entries)")
    if "task" not in checkpoint["config"]:  # the two task families share one checkpoint dialect; the config tells
        raise SwiftFormerError(f"{path} is a classification run (swiftformer train), not a detection or segmentation "
                               "one: use swiftformer eval / predict with it")
    checkpoint = {LEGACY_KEYS.get(k, k): v for k, v in checkpoint.items()}
    if "classes" in checkpoint:
        classes = checkpoint.pop("classes")
        checkpoint.update(class_names=classes["names"], category_ids=classes["category_ids"])
    return checkpoint


def load_trained(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[nn.Module, DenseConfig, list[str]]:
    """Model (eval mode, on CPU), config and class names of a training checkpoint written by :func:`train`."""
    checkpoint = read_checkpoint(path)
    stored = {k: v for k, v in checkpoint["config"].items() if k != "pretrained"}  # the weights come from the checkpoint
    config = config_from_dict(stored, overrides)
    model = build_task_model(config, len(checkpoint["class_names"]))
    load_native_state_dict(model, checkpoint["model"])
    return model.eval(), config, checkpoint["class_names"]


def evaluate_checkpoint(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validation metrics of a trained checkpoint on its (or an overridden) dataset; DDP-aware."""
    model, config, _ = load_trained(path, overrides)
    dist_info = init_distributed(config.device)
    try:
        datasets = dense_datasets(config, train=False)
        _, _, val_loader = make_loaders(config, datasets, dist_info)
        model = model.to(dist_info.device)
        return evaluate(model, config, datasets, val_loader, dist_info.device, RunLog(".", enabled=False))
    finally:
        cleanup()
