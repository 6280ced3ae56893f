"""Latency and throughput of SwiftFormer beside its mobile peers, per backend, measured side by side.

    swiftformer bench --threads 2 --batch 32 --json docs/bench.json --csv docs/bench.csv --plot docs/bench.png
    swiftformer bench-attention --plot docs/attention.png
    swiftformer bench --models swiftformer_xs --backends onnxruntime,openvino --precision fp32,bf16,int8 \
        --calibration ../shared/data/cifar10-mini/train

Every (model, backend) pair becomes a *runner*: a callable that runs one forward pass on a fixed input
and returns its wall time. All runners are warmed up, then timed in interleaved rounds (each round runs
every runner, in a rotated order), so a change of machine load hits them all alike; the report gives the
median and 90th percentile of all calls, and each runner's *round spread* (its slowest round's median over its
fastest's): a shared VM can run 1.3-1.6x slower for tens of seconds at a time, and a run whose runners' rounds
disagree by more than ``UNSTEADY_SPREAD`` says so rather than passing its ratios off as the machine's. Weights
are random: latency does not depend on their values.
The runtimes' backends time the artefact ``swiftformer export`` writes, run by the runner its runtime's module
builds (:mod:`swiftformer.deploy`), the one ``eval``, ``predict`` and the export's check use. Reduced precisions
(``--precision``) are those of ``swiftformer export --precision``; int8 is calibrated on real images
(``--calibration``), and a precision this CPU or backend cannot run is skipped with the reason.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .cpu import CpuInfo, cpu_info
from .errors import SwiftFormerError
from .deploy import openvino
from .deploy.app_io import app_metadata, head_size, image_classifier
from .export import channels_last, check_pixels, unnormalised
from .formats import FORMATS
from .labels import default_class_names
from .models import PUBLISHED_TOP1, create_model, list_models, reparameterize
from .models.attention import build_attention
from .profiling import count_macs, count_params

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Published ImageNet-1K top-1 (224 px unless noted) of the timm peers, from their papers:
PEER_TOP1 = {
    "mobilevitv2_050": 70.2,  # Mehta & Rastegari, Separable Self-attention for Mobile ViTs, TMLR 2023, Tab. 4
    "mobilevitv2_100": 78.1,  # same table, MobileViTv2-1.0
    "efficientformer_l1": 79.2,  # Li et al., EfficientFormer, NeurIPS 2022, Tab. 1
    "efficientformerv2_s1": 79.0,  # Li et al., Rethinking Vision Transformers for MobileNet Size and Speed, ICCV 2023, Tab. 2
    "fastvit_t8": 75.6,  # Vasu et al., FastViT, ICCV 2023, Tab. 3
    "mobilenetv2_100": 72.0,  # Sandler et al., MobileNetV2, CVPR 2018, Tab. 4
    "edgenext_x_small": 74.8,  # Maaz et al., EdgeNeXt, ECCVW 2022, Tab. 2
    # timm's swiftformer_* carry the official weights: the SwiftFormer paper's Tab. 2.
    **{name: top1 for name, top1 in PUBLISHED_TOP1.items()},
}
PEERS = tuple(f"timm/{name}" for name in PEER_TOP1)
DEFAULT_MODELS = tuple(list_models()) + PEERS
BACKENDS = ("eager", "fused", "compile", "onnxruntime", "openvino", "executorch", "litert", "cuda")
# The export format whose graph a backend runs (its layout and precisions: formats.FORMATS).
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino", "executorch": "executorch", "litert": "litert"}
# Those that build in seconds per model (compile, executorch and litert take up to minutes); uninstalled ones are
# skipped.
DEFAULT_BACKENDS = ("eager", "fused", "onnxruntime", "openvino")
# Precisions each backend runs: those of its format's writer; every other backend runs fp32 only.
BACKEND_PRECISIONS = {backend: FORMATS[fmt].precisions for backend, fmt in FORMAT_OF.items()}
ATTENTION_TOKENS = (196, 784, 3136, 12544)
ATTENTION_NAMES = ("additive", "mhsa", "transposed", "separable")
# A runner's per-round medians agree within a few per cent on a steady machine; past this ratio the machine's
# speed changed during the run (measured on a shared VM: 1.3-1.6x states lasting tens of seconds).
UNSTEADY_SPREAD = 1.2

Runner = Callable[[], float]  # one forward pass; returns its time in seconds


@dataclass
class Record:
    """One (model, backend, batch) measurement."""

    model: str
    backend: str
    batch: int
    img_size: int
    median_ms: float
    p90_ms: float
    params: int
    macs: int  # per image
    published_top1: float | None  # the model's ImageNet-1K fp32 figure from its paper, not measured here
    threads: int
    allocator: str
    precision: str = "fp32"
    round_spread: float | None = None  # slowest / fastest per-round median (None: timed in one round)
    io: str = "tensor"  # the artefact's form: "image" (pixels in, probabilities out) or "tensor"
    images_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.images_per_s = 1e3 * self.batch / self.median_ms


# Models ------------------------------------------------------------------------------------------------
def is_peer(name: str) -> bool:
    return name.startswith("timm/")


def benchmark_model(name: str) -> nn.Module:
    """Ours by plain name (``swiftformer_s``), timm peers as ``timm/<name>``, in eval mode.

    Weights are random (no download); ours get the weights of timm's model of the same variant (seeded
    alike), so ours and ``timm/swiftformer_*`` compute with the very same numbers.
    """
    import timm

    if is_peer(name):
        base = name.split("/", 1)[1]
        if base not in PEER_TOP1:
            raise SwiftFormerError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
        torch.manual_seed(0)
        return timm.create_model(base, pretrained=False).eval()
    model = create_model(name).eval()
    torch.manual_seed(0)
    model.load_state_dict(timm.create_model(name, pretrained=False).state_dict())
    return model


def published_top1(name: str) -> float | None:
    return PEER_TOP1.get(name.split("/", 1)[1]) if is_peer(name) else PUBLISHED_TOP1.get(name)


def fused_form(name: str, model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Ours: :func:`swiftformer.reparameterize` (NCHW with ``channels_last=False``). Peers: timm's own
    reparameterization (FastViT, MobileOne...), a no-op for the others, in channels-last like ours."""
    if not is_peer(name):
        return reparameterize(model, channels_last=channels_last)
    from timm.utils.model import reparameterize_model

    return reparameterize_model(copy.deepcopy(model)).to(memory_format=torch.channels_last).eval()


# Runners -----------------------------------------------------------------------------------------------
def _timed(fn: Callable[[], object]) -> Runner:
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def torch_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    def forward() -> None:
        with torch.inference_mode():
            model(x)

    return _timed(forward)


def cuda_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    """GPU time of one pass from CUDA events."""
    model, x = model.cuda(), x.cuda()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run() -> float:
        with torch.inference_mode():
            start.record()
            model(x)
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return run


def artefact(name: str, fused: nn.Module, fmt: str, precision: str, x: torch.Tensor, path: Path,
             calibration: torch.Tensor | None) -> Path:
    """``fused`` at ``x``'s shape as ``swiftformer export`` writes ``fmt`` in ``precision``. A peer's fp32 graph the
    dynamo exporter rejects goes to ONNX (and OpenVINO) through the TorchScript-based exporter (ours never: the
    graph timed is the one export writes)."""
    try:
        return FORMATS[fmt].runtime.write(fused, x, path, precision, calibration)
    except Exception:  # noqa: BLE001 - any exporter failure of a third-party model falls back to the other exporter
        if not (is_peer(name) and fmt in ("onnx", "openvino") and precision == "fp32"):
            raise
    graph = path.with_suffix(".onnx")
    torch.onnx.export(fused, (x,), str(graph), dynamo=False, input_names=["image"], opset_version=17)
    return graph if fmt == "onnx" else openvino.write_ir(graph, path)


def image_artefact(fused: nn.Module, fmt: str, precision: str, x: torch.Tensor, path: Path,
                   calibration: torch.Tensor | None) -> tuple[Path, torch.Tensor]:
    """The image form of ``fused`` as ``swiftformer export --io image`` writes ``fmt``, at ``x``'s shape, and the
    seeded random pixels to time it on; ``calibration`` (normalised images) calibrates int8 as pixels."""
    image_input = FORMATS[fmt].image_input
    form = image_classifier(fused, image_input.layout, image_input.pixel_max)
    meta = app_metadata(form, default_class_names(head_size(fused)), tuple(x.shape[-2:]))
    pixels = check_pixels(x.shape[0], tuple(x.shape[-2:]), image_input)
    calibrated = (image_input.pixels(unnormalised(calibration, form.mean, form.std))
                  if calibration is not None else None)
    return FORMATS[fmt].runtime.write_image(form, pixels, path, meta, precision, calibrated), pixels


def artefact_runner(fmt: str, path: Path, x: torch.Tensor, threads: int, precision: str) -> Runner:
    """The artefact at ``path`` on the runner of its runtime (:mod:`swiftformer.deploy`), the one ``eval`` and the
    export's check run it through, on ``threads`` threads."""
    run = FORMATS[fmt].runtime.runner(path, threads, precision)
    return _timed(lambda: run(x))


def precision_skip_reason(backend: str, precision: str, cpu: CpuInfo, calibrated: bool) -> str:
    """Why ``backend`` cannot run ``precision`` here (``""``: it can)."""
    able = BACKEND_PRECISIONS.get(backend, ("fp32",))
    if precision not in able:
        return f"{precision}: {backend} runs {', '.join(able)}"
    if precision == "bf16" and not cpu.bf16:
        return "bf16: this CPU has no AVX-512-BF16/AMX (bf16 would be emulated, slower than fp32)"
    if precision == "fp16" and not {"avx512_fp16", "amx_fp16"} & cpu.flags:
        return "fp16: this CPU has no AVX-512-FP16/AMX-FP16 (OpenVINO would run it in fp32)"
    if precision == "int8" and not calibrated:
        return "int8: needs --calibration DIR (real images to calibrate on)"
    return ""


def build_runner(name: str, model: nn.Module, backend: str, x: torch.Tensor, workdir: Path, threads: int,
                 precision: str = "fp32", calibration: torch.Tensor | None = None, io: str = "tensor") -> Runner:
    """The runner of ``model`` on ``backend``; every backend but ``eager`` runs the fused form, the runtimes'
    backends the artefact ``swiftformer export`` writes in ``io`` form (:func:`artefact`, :func:`image_artefact`,
    :func:`artefact_runner`)."""
    stem = f"{name.replace('/', '_')}_b{x.shape[0]}_{io}" + (f"_{precision}" if precision != "fp32" else "")
    if backend in FORMAT_OF:
        fmt = FORMAT_OF[backend]
        fused = fused_form(name, model, channels_last=channels_last(fmt, precision))
        path = workdir / f"{stem}{FORMATS[fmt].suffix}"
        if io == "image":
            path, x = image_artefact(fused, fmt, precision, x, path, calibration)
        else:
            path = artefact(name, fused, fmt, precision, x, path, calibration)
        return artefact_runner(fmt, path, x, threads, precision)
    if backend == "eager":
        return torch_runner(model, x)
    fused = fused_form(name, model)  # PyTorch: channels-last
    if backend == "fused":
        return torch_runner(fused, x.contiguous(memory_format=torch.channels_last))
    if backend == "compile":
        # Inductor's CPU inference mode: weights frozen into the graph as constants, convolution weights
        # pre-packed for oneDNN, element-wise work fused into their epilogues.
        return torch_runner(torch.compile(fused, options={"freezing": True}), x.contiguous(memory_format=torch.channels_last))
    if backend == "cuda":
        return cuda_runner(fused, x)
    raise SwiftFormerError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def available_backends(requested: Iterable[str]) -> list[str]:
    """``requested`` less those this machine cannot run (no GPU, no executorch package)."""
    import importlib.util

    requested = list(requested)
    unknown = [b for b in requested if b not in BACKENDS]
    if unknown:
        raise SwiftFormerError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    usable = {
        "cuda": torch.cuda.is_available(),
        "executorch": importlib.util.find_spec("executorch") is not None,
        "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
        "openvino": importlib.util.find_spec("openvino") is not None,
        "litert": all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_litert")),
    }
    return [b for b in requested if usable.get(b, True)]


def matmul_runner(size: int = 1024) -> tuple[Runner, float]:
    """An fp32 ``size``² matmul (the machine's peak for dense math) and its FLOPs per call."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    return _timed(lambda: torch.mm(a, b, out=out)), 2.0 * size**3


# Timing ------------------------------------------------------------------------------------------------
def time_interleaved(
    runners: dict[str, Runner], warmup: int = 3, rounds: int = 10, iters: int = 3, min_sample_s: float = 0.0
) -> dict[str, list[float]]:
    """Per-call times (seconds) of every runner over ``rounds`` interleaved rounds of ``iters`` samples.

    Round ``r`` starts at runner ``r mod n``, so no runner always follows the same neighbour. A sample is
    one call, or with ``min_sample_s`` the mean of as many calls as fill that time (calibrated on the fastest
    warm-up call), so microsecond-scale workloads are not measured at the timer's and scheduler's grain.
    """
    keys = list(runners)
    calls = {}
    for key in keys:
        fastest = min(runners[key]() for _ in range(max(warmup, 1)))
        calls[key] = max(1, math.ceil(min_sample_s / max(fastest, 1e-9)))
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for round_index in range(rounds):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            for _ in range(iters):
                samples[key].append(sum(runners[key]() for _ in range(calls[key])) / calls[key])
    return samples


def summarize(times: Sequence[float]) -> tuple[float, float]:
    """``(median_ms, p90_ms)`` of per-call times in seconds."""
    ms = np.asarray(times) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 90))


def round_spread(times: Sequence[float], rounds: int) -> float | None:
    """The slowest over the fastest median of ``times`` split into ``rounds`` equal, consecutive rounds (as
    :func:`time_interleaved` returns them); ``None`` for a single round."""
    if rounds < 2:
        return None
    medians = np.median(np.asarray(times, float).reshape(rounds, -1), axis=1)
    return float(medians.max() / medians.min())


def fit_exponent(tokens: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) against log(tokens): time ∝ N^exponent."""
    if len(tokens) < 2:
        raise ValueError("fitting an exponent needs at least two points")
    slope, _ = np.polyfit(np.log(np.asarray(tokens, float)), np.log(np.asarray(times, float)), 1)
    return float(slope)


@dataclass
class BenchResult:
    """Records of one run, with the machine's fp32 matmul rate measured in it."""

    records: list[Record]
    matmul_gflops: float | None = None
    skipped: list[str] = field(default_factory=list)  # "<backend> <precision>: <reason>"

    def best(self, model: str, batch: int = 1) -> Record:
        """The fastest backend of ``model`` at ``batch``."""
        return min((r for r in self.records if r.model == model and r.batch == batch), key=lambda r: r.median_ms)

    def find(self, model: str, backend: str, batch: int = 1, precision: str = "fp32",
             io: str = "tensor") -> Record | None:
        return next((r for r in self.records if (r.model, r.backend, r.batch, r.precision, r.io) ==
                     (model, backend, batch, precision, io)), None)

    def steadiness(self) -> dict[int, float]:
        """Per batch size, the median over runners of their round spread (batch sizes timed in one round are
        left out)."""
        spreads: dict[int, list[float]] = {}
        for r in self.records:
            if r.round_spread is not None:
                spreads.setdefault(r.batch, []).append(r.round_spread)
        return {batch: float(statistics.median(values)) for batch, values in spreads.items()}

    def steadiness_lines(self) -> list[str]:
        """One line per batch size on how steady the machine was; a warning where it was not."""
        lines = []
        for batch, spread in self.steadiness().items():
            measured = f"at batch {batch} a runner's slowest round took {spread:.2f}x its fastest (median over runners)"
            if spread > UNSTEADY_SPREAD:
                lines.append(f"warning: this machine's speed changed during the run: {measured}, so its ratios can "
                             f"be off by as much; repeat it, with more --rounds to spread every runner over the "
                             f"changes")
            else:
                lines.append(f"steady machine: {measured}")
        if self.records and not lines:
            lines.append("the machine's steadiness is not measured in a single round (--rounds 2 or more)")
        return lines


def run_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    batch: int = 1,
    img_size: int = 224,
    threads: int = 2,
    rounds: int = 10,
    iters: int = 3,
    warmup: int = 3,
    allocator: str = "",
    log: Callable[[str], None] = lambda message: None,
    precisions: Sequence[str] = ("fp32",),
    calibration: torch.Tensor | None = None,
    peer_backends: Sequence[str] | None = None,
    ios: Sequence[str] = ("tensor",),
) -> BenchResult:
    """Batch-1 latency of every model × backend × precision, and batch-``batch`` throughput when ``batch`` > 1.

    The throughput pass also times an fp32 matmul in the same interleaved rounds (``matmul_gflops``).
    ``calibration`` (real images at ``img_size``) calibrates the int8 artefacts; pairs this CPU or backend
    cannot run are logged as skipped with the reason (``result.skipped``). ``peer_backends`` limits the peers
    (``timm/...``) to those backends in fp32 (default: every pair, as ours). ``ios``: the artefact forms the
    runtimes' backends time, ``image`` (pixels in, probabilities out: ours only) and/or ``tensor``; the PyTorch
    backends time the model itself (tensor).
    """
    torch.set_num_threads(threads)
    backends = available_backends(backends)
    batches = [1] + ([batch] if batch > 1 else [])
    records: list[Record] = []
    result = BenchResult(records)
    pairs = []
    for backend in backends:
        for precision in precisions:
            reason = precision_skip_reason(backend, precision, cpu_info(), calibration is not None)
            if reason:
                result.skipped.append(f"{backend} {reason}")
                log(f"skipped {backend} {reason}")
                continue
            for io in ios:
                if io == "image" and backend not in FORMAT_OF:
                    if "tensor" not in ios:
                        result.skipped.append(f"{backend} image: not an artefact (the image form is an export's)")
                    continue
                pairs.append((backend, precision, io))
    if not pairs:
        raise SwiftFormerError(f"nothing to time: every backend and precision asked for is skipped "
                               f"({'; '.join(result.skipped)})")
    with tempfile.TemporaryDirectory(prefix="swiftformer-bench-") as tmp:
        built = {}
        for name in models:
            log(f"building {name}")
            model = benchmark_model(name)
            built[name] = (model, count_params(model), count_macs(model, img_size))
        for size in batches:
            runners: dict[str, Runner] = {}
            x = torch.randn(size, 3, img_size, img_size)
            for name, (model, _, _) in built.items():
                for backend, precision, io in pairs:
                    if is_peer(name) and (io == "image" or peer_backends is not None and (backend not in peer_backends
                                                                                          or precision != "fp32")):
                        continue
                    log(f"preparing {name} / {backend} {precision} {io} at batch {size}")
                    try:
                        runners[f"{name}|{backend}|{precision}|{io}"] = build_runner(
                            name, model, backend, x, Path(tmp), threads, precision, calibration, io)
                    except Exception as error:  # noqa: BLE001 - a third-party model an exporter rejects
                        if isinstance(error, SwiftFormerError) or not is_peer(name):
                            raise  # ours: a bug to see, not a row to skip
                        log(f"skipped {name} / {backend}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            matmul_flops = 0.0
            if size > 1:
                runners["matmul|peak"], matmul_flops = matmul_runner()
            # A batch-N pass is N times longer: fewer calls per round keep the run time in check.
            calls = max(1, iters // size) if size > 1 else iters
            if not runners:
                raise SwiftFormerError(f"nothing to time at batch {size}: no model could be built for "
                                       f"{', '.join(f'{b} {p} {io}' for b, p, io in pairs)} (the reasons are logged "
                                       "above)")
            log(f"timing {len(runners)} runners at batch {size}: {rounds} rounds of {calls} calls")
            samples = time_interleaved(runners, warmup=warmup if size == 1 else 1, rounds=rounds, iters=calls)
            if matmul_flops:
                result.matmul_gflops = matmul_flops / statistics.median(samples.pop("matmul|peak")) / 1e9
            for key, times in samples.items():
                name, backend, precision, io = key.split("|")
                _, params, macs = built[name]
                median_ms, p90_ms = summarize(times)
                records.append(
                    Record(name, backend, size, img_size, median_ms, p90_ms, params, macs, published_top1(name),
                           threads, allocator, precision, round_spread(times, rounds), io)
                )
    return result


# Attention scaling -------------------------------------------------------------------------------------
def attention_modules(dim: int = 64) -> dict[str, nn.Module]:
    """The four token mixers of the paper's comparison, plus the fused inference form of ours."""
    modules = {name: build_attention(name, dim).eval() for name in ATTENTION_NAMES}
    modules["additive (fused)"] = modules["additive"].reparameterize().eval()
    return modules


def run_attention_benchmark(
    tokens: Sequence[int] = ATTENTION_TOKENS,
    dim: int = 64,
    threads: int = 2,
    rounds: int = 5,
    iters: int = 3,
) -> list[dict[str, float | int | str]]:
    """Median time of each attention on ``(1, N, dim)`` tokens for each N, interleaved per N."""
    torch.set_num_threads(threads)
    modules = attention_modules(dim)
    rows: list[dict[str, float | int | str]] = []
    for count in tokens:
        x = torch.randn(1, count, dim)
        runners = {name: torch_runner(module, x) for name, module in modules.items()}
        samples = time_interleaved(runners, warmup=2, rounds=rounds, iters=iters, min_sample_s=0.02)
        for name, times in samples.items():
            median_ms, p90_ms = summarize(times)
            rows.append({"attention": name, "tokens": count, "dim": dim, "median_ms": median_ms, "p90_ms": p90_ms})
    return rows


def attention_exponents(rows: Sequence[dict], low: int | None = None, high: int | None = None) -> dict[str, float]:
    """Fitted exponent of time vs N per attention, over the token counts in ``[low, high]``."""
    exponents = {}
    for name in dict.fromkeys(row["attention"] for row in rows):
        points = [
            (row["tokens"], row["median_ms"]) for row in rows
            if row["attention"] == name and (low is None or row["tokens"] >= low) and (high is None or row["tokens"] <= high)
        ]
        exponents[name] = fit_exponent(*zip(*points))
    return exponents


# Output ------------------------------------------------------------------------------------------------
def format_table(records: Sequence[Record]) -> str:
    """The records as a table; ``paper top-1`` is each model's published figure, not a measurement of the row."""
    header = (f"{'model':<28}{'backend':<13}{'prec':<6}{'io':<7}{'batch':>6}{'median ms':>11}{'p90 ms':>10}"
              f"{'img/s':>9}{'params M':>10}{'GMACs':>7}{'paper top-1':>12}")
    lines = [header, "-" * len(header)]
    for r in records:
        top1 = f"{r.published_top1:.1f}" if r.published_top1 is not None else "-"
        lines.append(
            f"{r.model:<28}{r.backend:<13}{r.precision:<6}{r.io:<7}{r.batch:>6}{r.median_ms:>11.2f}{r.p90_ms:>10.2f}{r.images_per_s:>9.1f}"
            f"{r.params / 1e6:>10.2f}{r.macs / 1e9:>7.2f}{top1:>12}"
        )
    lines.append("paper top-1: the published ImageNet-1K fp32 figure of each model (224 px unless its paper says "
                 "otherwise); the times are of random weights, whose accuracy is not measured here")
    return "\n".join(lines)


def write_json(records: Sequence[Record], path: str | Path, summary: dict | None = None) -> None:
    """``{"records": [...], "summary": {...}}``: every record has the same fields; the run's comparisons, matmul
    rate and machine go in ``summary``."""
    Path(path).write_text(json.dumps({"records": [asdict(r) for r in records], "summary": summary or {}}, indent=1))


def write_csv(records: Sequence[Record], path: str | Path) -> None:
    """One row per record (the summary has its own shape: it is in the JSON only)."""
    rows = [asdict(r) for r in records]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)


def plot_latency_vs_top1(result: BenchResult, path: str | Path, title: str = "") -> None:
    """The paper's Figure 1 on this machine: best batch-1 latency (x) vs published top-1 (y), one point per model."""
    import matplotlib.pyplot as plt

    figure = latency_figure(result, title)
    figure.savefig(path, dpi=130)
    plt.close(figure)


def latency_figure(result: BenchResult, title: str = "") -> Figure:
    """The matplotlib figure of :func:`plot_latency_vs_top1`: every label inside the axes (right of its point,
    the x range widened to hold it) and readable latency ticks (1-2-5 or every integer within a decade)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    models = list(dict.fromkeys(r.model for r in result.records if r.batch == 1 and r.published_top1 is not None))
    best = {name: result.best(name) for name in models}
    figure, axes = plt.subplots(figsize=(7.5, 5))
    ours = [name for name in models if not is_peer(name)]
    if ours:
        points = sorted((best[n].median_ms, best[n].published_top1, n) for n in ours)
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", color="tab:red",
                  label="SwiftFormer (ours, fastest backend and precision)")
    labels = []
    for name in models:
        record = best[name]
        color = "tab:red" if not is_peer(name) else ("tab:orange" if "swiftformer" in name else "tab:blue")
        if is_peer(name):
            axes.plot(record.median_ms, record.published_top1, "s", color=color)
        # ours above its point, timm's swiftformer_* (same top-1) below: the labels do not collide
        offset = (5, -10) if is_peer(name) and "swiftformer" in name else (5, 4)
        label = name if "swiftformer" in name else name.split("/")[-1]  # keep "timm/" where ours has a twin
        where = record.backend if record.precision == "fp32" else f"{record.backend} {record.precision}"
        labels.append(axes.annotate(f"{label} ({where})", (record.median_ms, record.published_top1),
                                    textcoords="offset points", xytext=offset, ha="left", fontsize=7))
    peers = [name for name in models if is_peer(name)]
    if any("swiftformer" in name for name in peers):
        axes.plot([], [], "s", color="tab:orange", label="timm swiftformer_*")
    if any("swiftformer" not in name for name in peers):
        axes.plot([], [], "s", color="tab:blue", label="timm peers")
    axes.set_xscale("log")
    axes.set_xlabel("batch-1 latency, best backend (ms, log scale)")
    axes.set_ylabel("published ImageNet-1K top-1 (%, fp32; not measured here)")
    axes.set_title(title or "Latency vs accuracy")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)  # above-left of the Pareto front: where no model is
    figure.tight_layout()
    axes.margins(y=0.08)  # room above the top point for its label
    figure.canvas.draw()
    width, (low, high) = axes.get_window_extent().width, axes.get_xlim()
    for text in labels:  # widen the log x range until the label ends inside the axes: its share of the width fits
        share = min(0.9, (text.get_window_extent().width + 10) / width)  # + the offset from the point, a margin
        point = math.log10(text.xy[0])
        high = max(high, 10 ** ((point - share * math.log10(low)) / (1 - share)))
    axes.set_xlim(low, high)
    low, high = axes.get_xlim()
    decades = math.log10(high / low)
    subs = range(1, 10) if decades < 1.2 else (1, 2, 5) if decades < 3 else (1,)
    axes.xaxis.set_major_locator(LogLocator(subs=tuple(subs)))
    axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    return figure


def plot_attention_scaling(rows: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Log-log time vs token count, one line per attention, its fitted exponent in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exponents = attention_exponents(rows)
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for name, exponent in exponents.items():
        points = [(row["tokens"], row["median_ms"]) for row in rows if row["attention"] == name]
        axes.loglog(*zip(*points), "o-", label=f"{name}: N^{exponent:.2f}")
    axes.set_xlabel("tokens N")
    axes.set_ylabel("median time (ms)")
    axes.set_title(title or "Token mixers at width 64, batch 1")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def speedup(slow_ms: float, fast_ms: float) -> float:
    return slow_ms / fast_ms if fast_ms > 0 else math.inf
