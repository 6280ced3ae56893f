"""Where a benchmark script writes its record: ``benchmarks/results/DATE_CPU_WHAT.json``, the JSON holding the date,
the CPU (model and instruction sets), the software and the command, beside the figures. One writer, so every record
names its machine the same way (``swiftformer bench --json`` writes the same fields into its ``summary``)."""
from __future__ import annotations

import datetime
import json
import re
import shlex
import sys
from pathlib import Path

import torch

from swiftformer.cpu import cpu_info

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_slug() -> str:
    """``amd-epyc-avx2`` / ``intel-xeon-processor-avx512-amx``: the CPU's words and its widest vector extension."""
    info = cpu_info()
    words = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", " ", info.model.lower())
    isa = "amx" if info.amx else "avx512" if info.avx512 else "avx2" if info.avx2 else "base"
    return "-".join(re.findall(r"[a-z0-9]+", words)[:3] + [isa])


def write_record(what: str, figures: dict, out: Path | None = None) -> Path:
    """``figures`` with the date, CPU, software and command, as ``out`` or ``results/DATE_CPU_WHAT.json``."""
    now = datetime.datetime.now().astimezone()
    info = cpu_info()
    record = {
        "date": now.isoformat(timespec="seconds"), "cpu": info.model, "isa": info.isa(),
        "software": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), **figures,
    }
    path = out or RESULTS / f"{now:%Y-%m-%d}_{cpu_slug()}_{what}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
