"""Distributed faults: when one of two gloo ranks dies or hangs mid-epoch, the other exits with an error within
a bounded time instead of waiting forever. The ranks are plain processes with the environment ``torchrun``
sets, without ``torchrun`` (whose agent would kill the survivor itself): the survivor must notice alone."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from . import fault_injection

pytestmark = pytest.mark.slow

# Each rank trains a tiny run; rank 1 writes the fault file, then kills or stops itself at its second batch.
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
        argv = fault_injection.command(
            "kill" if fault == "dies" else "stop", fault_file, 0, 1,
            [*TRAIN, "--output-dir", str(tmp_path / "run"), "--dist-timeout", str(DIST_TIMEOUT)], rank=1,
        )
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
