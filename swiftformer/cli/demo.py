"""``swiftformer demo`` (``make demo``): the whole product on scikit-learn's digits in a few minutes on a CPU.

Train SwiftFormer-XS from scratch (recipe ``swiftformer/configs/demo_digits.yaml``), evaluate the saved
checkpoint, fuse it (:func:`swiftformer.reparameterize`), export the fused model to ONNX and OpenVINO IR (each
artefact run by its own runtime and compared with PyTorch), and time the fused model against the unfused one
at batch 1 with the benchmark's own harness. Each step prints one line; the library does every step, the demo
only strings them together.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..data import CheckedLoader
    from ..recipes import TrainConfig

# (format, file name, the runtime that checks it, the package that runtime needs)
EXPORTS = (("onnx", "model.onnx", "ONNX Runtime", "onnxruntime"), ("openvino", "model.xml", "OpenVINO", "openvino"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .numbers import image_side, positive_int

    parser.add_argument("--output-dir", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: the demo recipe's (8)")
    parser.add_argument("--img-size", type=image_side, default=None, help="default: the demo recipe's (64)")
    parser.add_argument("--rounds", type=positive_int, default=10, help="interleaved timing rounds of the latency step")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..recipes import load_recipe
    from . import quiet_converters

    quiet_converters(args.verbose)

    overrides = {"output_dir": args.output_dir, "device": args.device, "progress": args.progress, "overwrite": True}
    budget = {"epochs": args.epochs, "img_size": args.img_size}
    overrides.update({key: value for key, value in budget.items() if value is not None})
    config = load_recipe("demo_digits", overrides)
    print(f"demo     {config.model} from scratch on scikit-learn's digits, "
          f"recipe swiftformer/configs/demo_digits.yaml, run directory {config.output_dir}", flush=True)
    from ..runlog import quiet_library

    with quiet_library(getattr(args, "verbose", False)):
        checkpoint = train_step(config)
        model, loader = evaluate_step(checkpoint)
        fused = fuse_step(model, loader)
        for fmt, name, runtime, package in EXPORTS:
            export_step(model, fmt, checkpoint.parent / name, runtime, package, config.img_size)
        latency_step(model, fused, config.img_size, args.rounds)
    print(f"next     swiftformer eval --checkpoint {checkpoint}")
    return 0


def train_step(config: TrainConfig) -> Path:
    """``swiftformer.train.main``; returns the run's ``last.pth``."""
    from ..data import build_dataset
    from ..train import main

    start = time.perf_counter()
    result = main(config)
    minutes, record = (time.perf_counter() - start) / 60, result.record
    images = len(build_dataset(result.model, config, "train")[0])
    print(f"train    {config.epochs} epoch{'s' * (config.epochs != 1)} on {images:,} digits at {config.img_size} px in "
          f"{minutes:.1f} min: val top-1 {record['val_top1']:.2f} %, "
          f"EMA top-1 {record['ema_top1']:.2f} %", flush=True)
    return Path(config.output_dir) / "last.pth"


def evaluate_step(checkpoint: Path) -> tuple[nn.Module, CheckedLoader]:
    """What ``swiftformer eval --checkpoint RUN/last.pth`` does: reload the run, rebuild its validation data."""
    from ..data import build_dataset, eval_loader
    from ..distributed import DistInfo
    from ..engine import evaluate
    from ..inference import load_model, run_config

    loaded = load_model(str(checkpoint))
    config = run_config(loaded)
    dataset, _ = build_dataset(loaded.model, config, "val")
    loader = eval_loader(dataset, config.batch_size, config.workers, DistInfo(0, 1, 0, torch.device("cpu")))
    result = evaluate(loaded.model, loader, torch.device("cpu"), loaded.model.num_classes, channels_last=True)
    print(f"eval     {checkpoint} reloaded: top-1 {result.top1:.2f} %, top-5 {result.top5:.2f} % "
          f"on {result.count:,} held-out digits", flush=True)
    return loaded.model, loader


@torch.no_grad()
def fuse_step(model: nn.Module, loader: CheckedLoader) -> nn.Module:
    """:func:`swiftformer.reparameterize`, compared with the unfused model on the first validation batch."""
    from ..engine import evaluate
    from ..models import reparameterize

    fused = reparameterize(model)
    images, _ = next(iter(loader))
    difference = float((fused(images) - model(images)).abs().max())
    result = evaluate(fused, loader, torch.device("cpu"), model.num_classes, channels_last=True)
    batch_norms = [sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in (model, fused)]
    print(f"fuse     {batch_norms[0]} BatchNorms, the layer scales and the twin heads folded "
          f"({batch_norms[1]} BatchNorms left): max |Δlogit| {difference:.1e} on {len(images)} images, "
          f"fused top-1 {result.top1:.2f} %", flush=True)
    return fused


def export_step(model: nn.Module, fmt: str, out: Path, runtime: str, package: str, img_size: int) -> None:
    """:func:`swiftformer.export.export_model`: it fuses, writes, runs the artefact and fails beyond 1e-4."""
    if importlib.util.find_spec(package) is None:
        print(f"export   {fmt:<8} skipped: {package} is not installed (pip install -e \".[export]\")", flush=True)
        return
    from ..export import export_model

    result = export_model(model, fmt, out, img_size=(img_size, img_size))
    print(f"export   {fmt:<8} checked by {runtime}: max |Δ| {result.max_abs_diff:.1e} vs PyTorch -> {result.path}",
          flush=True)


def latency_step(model: nn.Module, fused: nn.Module, img_size: int, rounds: int) -> None:
    """Batch-1 latency of the trained model, fused against unfused, with ``swiftformer bench``'s interleaved timing."""
    from ..bench import speedup, summarize, time_interleaved, torch_runner
    from ..engine import memory_format

    image = torch.randn(1, 3, img_size, img_size).contiguous(memory_format=memory_format(channels_last=True))
    samples = time_interleaved({"fused": torch_runner(fused, image), "unfused": torch_runner(model, image)},
                               warmup=3, rounds=rounds, iters=10)
    fused_ms, unfused_ms = (summarize(samples[key])[0] for key in ("fused", "unfused"))
    print(f"latency  batch 1 at {img_size} px, {torch.get_num_threads()} threads, median of {rounds * 10} calls: "
          f"fused {fused_ms:.2f} ms, unfused {unfused_ms:.2f} ms ({speedup(unfused_ms, fused_ms):.2f}x)", flush=True)
