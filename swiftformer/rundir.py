"""A training run's folder, the same for both task families (``train``, ``detect train``, ``segment train``).

``RUN/config.yaml``   the resolved config (``overwrite`` off: a run started from it replaces nothing)
``RUN/last.pth``      the newest checkpoint, ``RUN/best.pth`` the best one (plain dicts, written atomically)
``RUN/log.jsonl``     the records of the run, each written once the checkpoint that holds it is saved: a killed run's
                      log claims nothing its ``last.pth`` does not hold, and a resumed run trims what it does not
``RUN/curves.png``    loss and validation metric, redrawn after every checkpoint (it survives Ctrl-C)
``RUN/.lock``         held (``flock``) while a run writes there: a second run into the folder stops at once; the
                      operating system lets go of it when the process dies, so a killed run leaves no stale lock

The RNG state of every rank travels in the checkpoints (:func:`rng_state`), so ``--resume`` draws the same
augmentations as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_torch_save, atomic_write, check_destination
from .distributed import DistInfo, all_gather_object
from .errors import SwiftFormerError
from .recipes import Recipe, save_config
from .runlog import RunLog, plot_curves

log = logging.getLogger(__name__)

RUN_FILES = ("last.pth", "best.pth", "log.jsonl")  # a folder with one of them holds at least one saved epoch
LOCK_FILE = ".lock"


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


def restore_rng(states: list[dict[str, Any]], dist_info: DistInfo, path: str | Path, fresh_seed: int) -> None:
    """This rank's generators as the checkpoint ``path`` saved them (one state per rank); with another number of
    processes than the run had, a warning and ``fresh_seed + rank``."""
    if len(states) == dist_info.world_size:
        set_rng_state(states[dist_info.rank])
        return
    log.warning("%s was written by %d process(es), this run has %d: augmentations restart from fresh seeds",
                path, len(states), dist_info.world_size)
    seed_everything(fresh_seed + dist_info.rank)


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


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` (which may exist) as a hard link to ``source``, or a copy where the file system has no links."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``str()`` says what is saved and the command that goes on."""


class RunDirectory:
    """The folder of one run, locked from :meth:`open` to :meth:`close` (a context manager). Only the reporting
    rank (``enabled``) writes; every rank learns whether the lock was taken.

    The loop queues log records (:meth:`record`) and hands each checkpoint to :meth:`save`, which writes it and
    then the records it holds.
    """

    def __init__(self, path: str | Path, dist_info: DistInfo, tensorboard: bool = False, progress: bool = True) -> None:
        self.path = Path(path)
        self.dist_info, self.enabled = dist_info, dist_info.is_main
        self.tensorboard, self.progress = tensorboard, progress
        self.runlog = RunLog(self.path, enabled=False)  # the real one from start(): TensorBoard writes at once
        self.pending: list[dict[str, Any]] = []
        self.saved: str | None = None  # what the newest checkpoint holds, e.g. "epoch 3"
        self._lock_fd: int | None = None
        self._made_folder = False

    # The lock -------------------------------------------------------------------------------------------------
    def open(self) -> "RunDirectory":
        """Take the folder's lock; a :class:`SwiftFormerError` on every rank if another run holds it."""
        try:
            error = self._lock() if self.enabled else None
        except SwiftFormerError as unusable:  # a read-only folder, or a file there: every rank stops
            error = str(unusable)
        errors = [e for e in all_gather_object(error) if e]
        if errors:
            self.close()
            raise SwiftFormerError(errors[0])
        return self

    def _lock(self) -> str | None:
        self._made_folder = not self.path.is_dir()
        check_destination(self.path, folder=True)  # a read-only folder, or a file there, is one line
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILE
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                by = f" (process {holder})" if holder else ""
                return (f"{self.path} is in use by another run{by}: wait for it to end, or give another "
                        "--output-dir")
            try:  # the holder may have unlinked the file between our open and our lock: lock the one in the folder
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        with contextlib.suppress(OSError):  # who holds the lock, for a second run's message (a full disk: unsaid)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        return None

    def close(self) -> None:
        """Let go of the lock (and of a folder this run made and left empty)."""
        self.runlog.close()
        if self._lock_fd is None:
            return
        (self.path / LOCK_FILE).unlink(missing_ok=True)  # while locked: a waiting opener re-checks the inode
        os.close(self._lock_fd)
        self._lock_fd = None
        if self._made_folder and not any(self.path.iterdir()):
            self.path.rmdir()

    def __enter__(self) -> "RunDirectory":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The files ------------------------------------------------------------------------------------------------
    def start(self, config: Recipe, replaced: list[Path], keep: Callable[[dict[str, Any]], bool],
              resumed: str | None = None) -> None:
        """The run's first writes, once every check has passed: the earlier run's files that ``--overwrite``
        replaces are deleted, the log keeps only the records ``keep`` accepts (those the resumed checkpoint holds,
        ``resumed`` names them: "epoch 3"), and ``config.yaml`` is written."""
        self.saved = resumed
        self.runlog = RunLog(self.path, self.enabled, self.tensorboard, self.progress)
        if not self.enabled:
            return
        for path in replaced:
            path.unlink()
        self.runlog.keep(keep)
        save_config(config, self.path / "config.yaml")
        log.info("run directory: %s", self.path)

    def record(self, record: dict[str, Any]) -> None:
        """Queue a log record for the next checkpoint."""
        self.pending.append(record)

    def save(self, checkpoint: dict[str, Any], is_best: bool, saved: str) -> None:
        """Write ``checkpoint`` as ``last.pth`` (and ``best.pth``), then the queued records and ``curves.png``
        (a full disk stops the run with the previous checkpoint and log as they were);
        ``saved`` names what it holds ("epoch 3"), for the line said on Ctrl-C."""
        if self.enabled:
            last = atomic_torch_save(checkpoint, self.path / "last.pth")
            if is_best:  # the same bytes: a second name for them, no second write (nor the space for it)
                atomic_write(self.path / "best.pth", lambda tmp: link_or_copy(last, tmp))
            for record in self.pending:
                self.runlog.write(record)
            if self.runlog.path.is_file():
                plot_curves(self.runlog.path, self.path / "curves.png")
        self.pending.clear()
        self.saved = saved

    def interrupted(self, resume_command: str) -> RunInterrupted:
        """The error to raise on Ctrl-C: what is saved, and ``resume_command`` (which takes ``RUN/last.pth``)."""
        if self.saved is None:
            return RunInterrupted("interrupted before the first checkpoint: nothing saved")
        return RunInterrupted(f"interrupted; {self.saved} is saved in {self.path / 'last.pth'}, go on with: "
                              f"{resume_command}")

