"""Distributed faults: when one of two gloo ranks dies or hangs mid-epoch, the other exits with an error within
a bounded time instead of waiting forever. The ranks are plain processes with the environment ``torchrun``
sets, without ``torchrun`` (whose agent would kill the survivor itself): the survivor must notice alone."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Each rank trains a tiny run; rank 1 writes a file, then kills or stops itself at its second batch.
RANK = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import swiftformer.train
    from swiftformer.cli import main

    fault, fault_file = sys.argv[1], Path(sys.argv[2])
    real_train_one_epoch = swiftformer.train.train_one_epoch

    class FaultyLoader:
        def __init__(self, loader):
            self.loader = loader
        def __len__(self):
            return len(self.loader)
        def __iter__(self):
            for index, batch in enumerate(self.loader):
                if index == 1 and os.environ["RANK"] == "1":
                    fault_file.write_text(fault)
                    os.kill(os.getpid(), signal.SIGKILL if fault == "dies" else signal.SIGSTOP)
                yield batch

    def train_one_epoch(model, criterion, loader, *args, **kwargs):
        return real_train_one_epoch(model, criterion, FaultyLoader(loader), *args, **kwargs)

    swiftformer.train.train_one_epoch = train_one_epoch
    sys.exit(main(sys.argv[3:]))
    """
)
TRAIN = ["train", "--config", "demo_digits", "--dataset", "digits", "--img-size", "32", "--batch-size", "4",
         "--epochs", "1", "--workers", "0", "--no-progress", "--device", "cpu",
         "--set", "train_subset=32", "--set", "val_subset=8"]
DIST_TIMEOUT = 5  # seconds; the default (600) bounds a real run's wait the same way
BOUND = 60  # seconds from the fault to the survivor's exit (the timeout, plus slack for 2 busy shared cores)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_the_surviving_rank_exits_with_an_error_in_bounded_time(fault, tmp_path: Path):
    port, fault_file = _free_port(), tmp_path / "fault"
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-c", RANK, fault, str(fault_file), *TRAIN, "--output-dir", str(tmp_path / "run"),
                "--dist-timeout", str(DIST_TIMEOUT)]
        ranks.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    survivor, faulty = ranks
    try:
        deadline = time.monotonic() + 300
        while not fault_file.exists():
            assert survivor.poll() is None and faulty.poll() is None, survivor.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "rank 1 never reached its second batch"
            time.sleep(0.1)
        fault_time = time.monotonic()
        try:
            output, _ = survivor.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 0 still waits {BOUND} s after rank 1 {'died' if fault == 'dies' else 'hung'}")
        waited = time.monotonic() - fault_time
        assert survivor.returncode not in (0, None), output[-3000:]
        # gloo's own words: "Connection closed by peer" or "Connection reset by peer"; "Timed out waiting ..."
        reasons = ("closed by peer", "reset by peer") if fault == "dies" else ("Timed out",)
        assert any(reason in output for reason in reasons), output[-3000:]
        if fault == "hangs":
            assert waited >= DIST_TIMEOUT * 0.8, f"rank 0 gave up after {waited:.1f} s, before the timeout"
            assert faulty.poll() is None  # still stopped: the survivor did not wait for it
    finally:
        for process in ranks:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.communicate()
