"""What a person sees during and after a run: progress bar, JSON-lines log, TensorBoard, a curves PNG.

Only rank 0 writes; other ranks get a :class:`RunLog` with ``enabled=False`` that does nothing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
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
        self.bar: Progress | None = None  # the newest, closed with the log: an error leaves no half-drawn bar
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from .errors import SwiftFormerError

                raise SwiftFormerError("--tensorboard needs the tensorboard package: pip install 'swiftformer[tensorboard]'") from None
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))

    def progress(self, iterable: Iterable[T], total: int, description: str) -> "Progress[T]":
        """A tqdm bar on rank 0 (ETA included); ``.update(**values)`` sets its postfix."""
        self.bar = Progress(iterable, total, description, self.show_progress)
        return self.bar

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``log.jsonl`` and send its numbers to TensorBoard."""
        if not self.enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record) + "\n").encode()
        with open(self.path, "ab", buffering=0) as handle:  # unbuffered: a failed write fails here, not at close
            size = handle.seek(0, os.SEEK_END)
            try:
                written = 0
                while written < len(line):
                    written += handle.write(line[written:])
            except OSError:  # a full disk: no half record, the log reads back
                handle.truncate(size)
                raise
        if self.writer is not None:
            step = record.get("epoch", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
            self.writer.flush()

    def keep(self, wanted: Callable[[dict[str, Any]], bool]) -> None:
        """Keep only the records ``wanted`` accepts (those a resumed checkpoint holds), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        records = read_log(self.path)
        kept = [record for record in records if wanted(record)]
        if len(kept) < len(records):
            from .checkpoint import atomic_write

            text = "".join(json.dumps(record) + "\n" for record in kept)
            atomic_write(self.path, lambda tmp: tmp.write_text(text))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
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
            self.close()
            raise
        if self.bar is not None:
            self.bar.update(1)
        return item

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, **values: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# What the right-hand plot of curves.png shows, where the log has it: classification's top-1, the dense tasks' metrics
VALIDATION_CURVES = (("val_top1", "model top-1"), ("ema_top1", "EMA top-1"), ("mIoU", "mIoU"), ("bbox_AP", "box AP"),
                     ("segm_AP", "mask AP"))


def plot_curves(log_path: str | Path, png_path: str | Path) -> Path:
    """:func:`curves_figure` of the log at ``log_path``, as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write

    figure = curves_figure(read_log(log_path))
    try:
        return atomic_write(png_path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(figure)


def curves_figure(records: list[dict[str, Any]]) -> Any:
    """Training loss and the validation metrics per epoch (classification) or iteration (detection, segmentation)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    step = "iteration" if any("iteration" in r for r in records) else "epoch"
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, curves, title in ((loss_axis, (("train_loss", "train"), ("val_loss", "val")), "loss"),
                                (metric_axis, VALIDATION_CURVES, "validation")):
        for key, label in curves:
            points = [(r[step], r[key]) for r in records if key in r and step in r]
            if points:
                axis.plot(*zip(*points), marker="o", label=label)
        axis.set(xlabel=step, title=title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs and iterations are whole
        if axis.lines:
            axis.legend()
    figure.tight_layout()
    return figure


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
