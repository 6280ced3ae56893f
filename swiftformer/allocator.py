"""Keep freed tensor memory in the process: glibc malloc settings for CPU inference and training.

glibc serves every allocation above its mmap threshold (at most 32 MiB on 64-bit) with a fresh ``mmap``
and returns it to the OS on ``free``; a batch-32 SwiftFormer activation is 20-80 MB, so each forward pass
touches its activations as new pages again (about 150,000 minor page faults per SwiftFormer-S batch-32 pass
here). :func:`tune_malloc` turns that off for the running process through ``mallopt``: no mmap-backed
chunks, and a trim threshold of 1 GiB, so freed blocks are reused by the next pass.

Preloading tcmalloc (``LD_PRELOAD=libtcmalloc_minimal.so.4``, Debian ``libtcmalloc-minimal4``) has the
same effect; the default jemalloc configuration does not (it decays freed pages back to the OS).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


def preloaded_allocator() -> str | None:
    """``jemalloc`` / ``tcmalloc`` when one is preloaded through ``LD_PRELOAD``, else ``None``."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc"):
        if name in preload:
            return name
    return None


def tune_malloc() -> bool:
    """Make glibc malloc keep freed memory (see module doc). Returns whether the settings were applied.

    Does nothing under a preloaded allocator or on a C library without ``mallopt`` (macOS, musl). Call it once the
    big libraries (torch, timm) are loaded: tuned before they load, the heap's layout left one 64 MiB block in three
    faulted in again on every use (``tests/test_allocator.py``), as the untuned allocator does.
    """
    if preloaded_allocator() is not None:
        return False
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    libc = ctypes.CDLL(path)
    if not hasattr(libc, "mallopt"):
        return False
    return all(
        libc.mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    )


def describe_allocator(tuned: bool) -> str:
    """One line for benchmark reports."""
    preloaded = preloaded_allocator()
    if preloaded:
        return f"{preloaded} (LD_PRELOAD)"
    return "glibc malloc, mallopt: mmap off, trim 1 GiB" if tuned else "glibc malloc, defaults"
