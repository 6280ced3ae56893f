"""What a person sees during and after a run: progress bar, JSON-lines log, TensorBoard, a curves PNG.

Only rank 0 writes; other ranks get a :class:`RunLog` with ``enabled=False`` that does nothing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class RunLog:
    """``log.jsonl`` (one record per epoch), optional TensorBoard scalars, and per-epoch progress bars."""

    def __init__(self, output_dir: str | Path, enabled: bool = True, tensorboard: bool = False, progress: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.enabled, self.show_progress = enabled, progress and enabled
        self.path = self.output_dir / "log.jsonl"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from .errors import SwiftFormerError

                raise SwiftFormerError("--tensorboard needs the tensorboard package: pip install 'swiftformer[tensorboard]'") from None
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))

    def progress(self, iterable: Iterable[T], total: int, description: str) -> "Progress[T]":
        """A tqdm bar on rank 0 (ETA included); ``.update(**values)`` sets its postfix."""
        return Progress(iterable, total, description, self.show_progress)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``log.jsonl`` and send its numbers to TensorBoard."""
        if not self.enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record.get("epoch", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
            self.writer.flush()

    def keep_epochs(self, epochs: int) -> None:
        """Drop the records of epochs after ``epochs`` (those a resumed checkpoint does not hold), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        records = read_log(self.path)
        kept = [record for record in records if record.get("epoch", 0) <= epochs]
        if len(kept) < len(records):
            from .checkpoint import atomic_write

            text = "".join(json.dumps(record) + "\n" for record in kept)
            atomic_write(self.path, lambda tmp: tmp.write_text(text))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress(Iterator[T]):
    """Wraps an iterable with an optional tqdm bar."""

    def __init__(self, iterable: Iterable[T], total: int, description: str, enabled: bool) -> None:
        self.iterator = iter(iterable)
        self.bar = tqdm(total=total, desc=description, dynamic_ncols=True, leave=False) if enabled else None

    def __next__(self) -> T:
        try:
            item = next(self.iterator)
        except StopIteration:
            if self.bar is not None:
                self.bar.close()
            raise
        if self.bar is not None:
            self.bar.update(1)
        return item

    def update(self, **values: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(log_path: str | Path, png_path: str | Path) -> Path:
    """Training loss and val top-1 (model and EMA) per epoch, as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    epochs = [r["epoch"] for r in records]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train")
    if any("val_loss" in r for r in records):
        loss_axis.plot(epochs, [r.get("val_loss", math.nan) for r in records], marker="o", label="val")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_axis.legend()
    for key, label in (("val_top1", "model"), ("ema_top1", "EMA")):
        if any(key in r for r in records):
            acc_axis.plot(epochs, [r.get(key, math.nan) for r in records], marker="o", label=label)
    acc_axis.set(xlabel="epoch", ylabel="top-1 (%)", title="val top-1")
    acc_axis.legend()
    figure.tight_layout()
    png_path = Path(png_path)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


@contextlib.contextmanager
def quiet_library(verbose: bool) -> Iterator[None]:
    """The libraries' INFO lines on the root logger (per-epoch summaries, the converters' graph rewrites) would
    bury a command's own few lines; warnings stay, and ``verbose`` keeps everything."""
    logger = logging.getLogger()
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
