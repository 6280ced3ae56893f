"""Run ``swiftformer`` with a fault injected at a known batch, for the reliability tests.

    python tests/fault_injection.py FAULT MARKER EPOCH BATCH [--rank R] -- SWIFTFORMER-ARGS...
    python tests/fault_injection.py FAULT MARKER --save N -- SWIFTFORMER-ARGS...

When the training loader of epoch ``EPOCH`` (0-based, as ``train_one_epoch`` counts) reaches batch ``BATCH``
(classification), or when the run (either task family) starts writing its ``N``-th ``last.pth`` (1-based),
the process writes ``FAULT`` to the file ``MARKER`` and then: ``kill`` — SIGKILLs itself, ``stop`` — SIGSTOPs
itself (a hung process), ``stall`` — sleeps for ten minutes (for the parent to kill it). With ``--rank R``
only the process whose ``RANK`` environment variable is R injects the fault.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

import swiftformer.rundir
import swiftformer.train
from swiftformer.cli import main

FAULTS = ("kill", "stop", "stall")


def inject(fault: str) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        time.sleep(600)


class FaultyLoader:
    """A loader that injects ``fault`` before yielding batch ``batch``."""

    def __init__(self, loader, fault: str, marker: Path, batch: int) -> None:
        self.loader, self.fault, self.marker, self.batch = loader, fault, marker, batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for index, item in enumerate(self.loader):
            if index == self.batch:
                self.marker.write_text(self.fault)
                inject(self.fault)
            yield item


def command(
    fault: str, marker: Path, epoch: int, batch: int, swiftformer_args: list[str], rank: int | None = None
) -> list[str]:
    """The argv of a process that runs ``swiftformer SWIFTFORMER_ARGS`` with ``fault`` injected as described above."""
    rank_args = [] if rank is None else ["--rank", str(rank)]
    return [sys.executable, __file__, fault, str(marker), str(epoch), str(batch), *rank_args, "--", *swiftformer_args]


def save_command(fault: str, marker: Path, save: int, swiftformer_args: list[str]) -> list[str]:
    """The argv of a process that runs ``swiftformer SWIFTFORMER_ARGS`` with ``fault`` injected when it starts
    writing its ``save``-th ``last.pth``."""
    return [sys.executable, __file__, fault, str(marker), "--save", str(save), "--", *swiftformer_args]


def fault_on_save(fault: str, marker: Path, save: int) -> None:
    """Inject ``fault`` as the run starts writing its ``save``-th ``last.pth``."""
    real_save, saves = swiftformer.rundir.atomic_torch_save, []

    def atomic_torch_save(obj, path):
        if Path(path).name == "last.pth":
            saves.append(path)
            if len(saves) == save:
                marker.write_text(fault)
                inject(fault)
        return real_save(obj, path)

    swiftformer.rundir.atomic_torch_save = atomic_torch_save


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fault", choices=FAULTS)
    parser.add_argument("marker", type=Path)
    parser.add_argument("epoch", type=int, nargs="?")
    parser.add_argument("batch", type=int, nargs="?")
    parser.add_argument("--rank", default=None, help="only this RANK injects the fault")
    parser.add_argument("--save", type=int, default=None, help="inject as the N-th last.pth is written")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    if args.save is not None:
        fault_on_save(args.fault, args.marker, args.save)
        return main(command)
    real_train_one_epoch = swiftformer.train.train_one_epoch
    faulty = args.rank is None or os.environ.get("RANK") == args.rank

    def train_one_epoch(model, criterion, loader, optimizer, scheduler, scaler, device, epoch, *rest, **kwargs):
        if faulty and epoch == args.epoch:
            loader = FaultyLoader(loader, args.fault, args.marker, args.batch)
        return real_train_one_epoch(model, criterion, loader, optimizer, scheduler, scaler, device, epoch, *rest, **kwargs)

    swiftformer.train.train_one_epoch = train_one_epoch
    return main(command)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
