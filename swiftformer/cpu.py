"""What this CPU can run fast: the ISA extensions that decide which kernels and precisions exist.

Benchmarks print :func:`describe` beside every figure; code that picks a kernel or a precision asks
:func:`cpu_info` at run time instead of assuming the machine it was written on.

bf16 has native kernels only with AVX-512-BF16 or AMX (elsewhere runtimes emulate it, slower than fp32); int8
dot products need VNNI (AVX-512-VNNI or AVX-VNNI) to avoid the u8*s8 saturation of plain AVX2 ``vpmaddubsw``,
which is why ONNX Runtime's ``reduce_range`` (7-bit weights) is the safe choice without it.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def bf16(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return bool({"amx_bf16", "amx_int8"} & self.flags)

    def isa(self) -> list[str]:
        """The extensions that matter here, in a fixed order, e.g. ``['AVX2', 'AVX-512', 'VNNI', 'AMX']``."""
        named = {"AVX2": self.avx2, "AVX-512": self.avx512, "VNNI": self.vnni, "AVX-512-BF16/AMX-BF16": self.bf16,
                 "AMX": self.amx}
        return [name for name, present in named.items() if present]


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU model and flags (``/proc/cpuinfo`` on Linux; PyTorch's capability level elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        return CpuInfo(fields.get("model name", platform.processor()), frozenset(fields.get("flags", "").split()))
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()  # "AVX2", "AVX512", "DEFAULT", ...
    flags = {"avx2"} | ({"avx512f"} if capability.startswith("avx512") else set()) if "avx" in capability else set()
    return CpuInfo(platform.processor() or platform.machine(), frozenset(flags))


def describe(threads: int | None = None) -> str:
    """One line for a benchmark's header: ``Intel(R) Xeon(R) ... (AVX2, AVX-512, VNNI, AMX), 2 threads``."""
    info = cpu_info()
    line = f"{info.model} ({', '.join(info.isa()) or 'no AVX2 or newer'})"
    return line if threads is None else f"{line}, {threads} threads"
