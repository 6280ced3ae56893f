"""glibc malloc tuning: freed activation-sized blocks stay in the process, and the setting is reported."""
import platform
import subprocess
import sys

import pytest

from swiftformer import allocator

# Steady-state minor page faults of allocating, touching and freeing 64 MiB, in a fresh interpreter.
FAULTS = """
import resource, sys, torch
import swiftformer.models  # what the command line loads before it tunes malloc
from swiftformer.allocator import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.empty(64 << 18).fill_(1.0)
before = faults()
for _ in range(3):
    torch.empty(64 << 18).fill_(1.0)
print(faults() - before)
"""


def steady_faults(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or allocator.preloaded_allocator() is not None,
                    reason="mallopt tuning is for glibc malloc without a preloaded allocator")
def test_tune_malloc_stops_page_faults_of_large_blocks():
    default = steady_faults("default")
    assert default > 3 * 10_000  # 16,384 4-KiB pages per 64 MiB block, faulted every time
    # tuned: blocks are reused; at most one of the three may be faulted in again (seen once: 16,384)
    assert steady_faults("tuned") <= default / 3 + 1_000
    assert allocator.describe_allocator(True).startswith("glibc malloc, mallopt")


def test_preloaded_allocator_is_named_and_left_alone(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert allocator.preloaded_allocator() == "tcmalloc"
    assert not allocator.tune_malloc()
    assert allocator.describe_allocator(False) == "tcmalloc (LD_PRELOAD)"
