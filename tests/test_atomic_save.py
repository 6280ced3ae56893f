"""A process killed (SIGKILL) while writing a checkpoint leaves the previous one intact and loadable."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import swiftformer
from swiftformer.checkpoint import atomic_torch_save

# The child writes a large checkpoint through atomic_write, streaming torch.save into a file that sleeps
# after each chunk, so the parent can kill it while the new checkpoint is half written.
CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from swiftformer.checkpoint import atomic_write

    class SlowFile:
        def __init__(self, handle):
            self.handle = handle
        def write(self, data):
            written = self.handle.write(data)
            self.handle.flush()
            print("writing", flush=True)
            time.sleep(0.05)
            return written
        def flush(self):
            self.handle.flush()

    def write(tmp):
        with open(tmp, "wb") as handle:
            torch.save({"model": {"w": torch.full((4_000_000,), 2.0)}, "epoch": 2}, SlowFile(handle))

    atomic_write(sys.argv[1], write)
    print("finished", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pth"
    atomic_torch_save({"model": {"w": torch.ones(10)}, "epoch": 1}, path)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"  # the new checkpoint is being written
    time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    previous = torch.load(path, weights_only=True)
    assert previous["epoch"] == 1 and torch.equal(previous["model"]["w"], torch.ones(10))
    # the half-written temp file is the only leftover, and it never replaced the checkpoint
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pth"]
    assert all(name.startswith(".last.pth.") and name.endswith(".tmp") for name in leftovers)


def test_completed_save_replaces_checkpoint(tmp_path):
    path = tmp_path / "w.safetensors"
    model = swiftformer.create_model("swiftformer_xs", num_classes=3)
    swiftformer.save_checkpoint(model, path)
    model.reset_classifier(3)
    swiftformer.save_checkpoint(model, path)
    fresh = swiftformer.create_model("swiftformer_xs", num_classes=3)
    swiftformer.load_checkpoint(fresh, path)
    torch.testing.assert_close(fresh.head.weight, model.head.weight)
