"""What machine a figure was measured on: CPU model and the instruction sets that decide which kernels run.

Benchmarks print :func:`describe` beside every figure; code that picks a kernel or a precision asks
:func:`has` at run time instead of assuming the machine it was written on.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name the docs use; the ones that change which int8/bf16/fp32 kernels run.
RELEVANT_ISA = {
    "avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512-VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512-BF16", "avx512_fp16": "AVX-512-FP16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8",
    "asimd": "NEON", "asimddp": "NEON-DOT", "bf16": "ARM-BF16",
}


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; the platform's processor string and no flags elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.machine(), frozenset(flags)


def cpu_model() -> str:
    return _cpuinfo()[0]


def has(flag: str) -> bool:
    """Whether the CPU reports ``flag`` (a /proc/cpuinfo name such as ``"amx_int8"``)."""
    return flag in _cpuinfo()[1]


def isa() -> list[str]:
    """The relevant instruction sets this CPU has, by their usual names (``["AVX2", "AVX-512", ...]``)."""
    return [name for flag, name in RELEVANT_ISA.items() if has(flag)]


def describe(threads: int | None = None) -> str:
    """One line for a benchmark's header: ``Intel(R) Xeon(R) ... (AVX2, AVX-512, AMX-INT8), 2 threads``."""
    line = f"{cpu_model()} ({', '.join(isa()) or 'no SIMD extensions reported'})"
    return line if threads is None else f"{line}, {threads} threads"
