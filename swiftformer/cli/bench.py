"""``swiftformer bench``: latency/throughput of SwiftFormer and its peers per backend.

    swiftformer bench --threads 2 --batch 32 --json bench.json --csv bench.csv --plot latency_vs_top1.png
    swiftformer bench --models swiftformer_s,timm/mobilevitv2_100 --backends fused,onnxruntime,openvino,executorch
    swiftformer bench --models swiftformer_xs --backends onnxruntime,openvino --precision fp32,bf16,int8 \
        --calibration ../shared/data/cifar10-mini/train

Attention scaling is its own command, ``swiftformer bench-attention``.
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys

log = logging.getLogger("swiftformer.bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench import BACKENDS, DEFAULT_BACKENDS
    from .bench_attention import add_timing_arguments
    from .numbers import image_side, positive_int

    parser.add_argument("--models", default=None, help="comma-separated; ours by name, peers as timm/<name> (default: all)")
    parser.add_argument(
        "--backends", default=None,
        help=f"comma-separated subset of {','.join(BACKENDS)} (default: those of {','.join(DEFAULT_BACKENDS)} this machine runs)",
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="also measure throughput at this batch size (> 1)")
    parser.add_argument("--img-size", type=image_side, default=224)
    parser.add_argument("--csv", default=None, help="write the records here")
    add_timing_arguments(parser)
    parser.add_argument("--precision", default="fp32", help="comma-separated subset of fp32,fp16,bf16,int8")
    parser.add_argument("--calibration", default=None, help="folder of real images to calibrate int8 on")
    parser.add_argument("--calibration-size", type=positive_int, default=64, help="calibration images (default 64)")
    parser.add_argument("--io", default="tensor", help="comma-separated subset of image,tensor: the artefact forms "
                        "the runtimes' backends time (image: swiftformer export --io image; default tensor)")


def summary_lines(result, batch: int) -> tuple[list[str], dict]:
    """The issue-4 comparisons that the records allow."""
    from ..bench import speedup
    from ..models import list_models

    lines, summary = result.steadiness_lines(), {"matmul_gflops": result.matmul_gflops,
                                                 "round_spread": result.steadiness()}
    names = {r.model for r in result.records}
    for variant in list_models():
        timm_eager = result.find(f"timm/{variant}", "eager")
        if variant in names and timm_eager:
            best = result.best(variant)
            ratio = speedup(timm_eager.median_ms, best.median_ms)
            summary[f"{variant}_vs_timm_eager"] = ratio
            lines.append(f"{variant} ({best.backend}) vs timm/{variant} eager, batch 1: {ratio:.2f}x faster")
    if "swiftformer_s" in names and "timm/mobilevitv2_100" in names:
        ours, theirs = result.best("swiftformer_s"), result.best("timm/mobilevitv2_100")
        ratio = speedup(theirs.median_ms, ours.median_ms)
        summary["swiftformer_s_vs_mobilevitv2_100"] = ratio
        lines.append(
            f"swiftformer_s ({ours.backend}) vs timm/mobilevitv2_100 ({theirs.backend}), batch 1: {ratio:.2f}x faster"
        )
    if result.matmul_gflops and "swiftformer_s" in names and batch > 1:
        best = result.best("swiftformer_s", batch)
        achieved = 2 * best.macs * best.images_per_s / 1e9
        summary["swiftformer_s_fraction_of_matmul_peak"] = achieved / result.matmul_gflops
        lines.append(
            f"swiftformer_s ({best.backend}) batch {batch}: {achieved:.1f} GFLOP/s = "
            f"{100 * achieved / result.matmul_gflops:.0f} % of the fp32 matmul rate {result.matmul_gflops:.1f} GFLOP/s"
        )
    for r in result.records:
        tensor = result.find(r.model, r.backend, r.batch, r.precision, "tensor") if r.io == "image" else None
        if tensor:
            ratio = r.median_ms / tensor.median_ms
            summary[f"{r.model}_{r.backend}_{r.precision}_b{r.batch}_image_over_tensor"] = ratio
            lines.append(f"{r.model} {r.backend} {r.precision} batch {r.batch}: the image form takes {ratio:.3f}x the "
                         f"tensor form's time ({r.median_ms:.2f} against {tensor.median_ms:.2f} ms)")
    return lines, summary


def _backends(requested: str | None) -> list[str]:
    """The backends to time; one the user names that this machine cannot run is an error, not a silent gap."""
    from ..bench import BACKENDS, DEFAULT_BACKENDS, available_backends
    from ..errors import SwiftFormerError

    if requested is None:
        return available_backends(DEFAULT_BACKENDS)
    names = requested.split(",")
    usable = available_backends(names)
    missing = [name for name in names if name not in usable]
    if missing:
        reason = "no CUDA GPU" if missing[0] == "cuda" else f"the {missing[0]} package is not installed"
        raise SwiftFormerError(f"backend {missing[0]} cannot run on this machine ({reason}); "
                               f"available here: {', '.join(available_backends(BACKENDS))}")
    return names


def _run_models(args: argparse.Namespace, allocator: str) -> int:
    from ..bench import DEFAULT_MODELS, format_table, plot_latency_vs_top1, run_benchmark, write_csv, write_json

    from ..cpu import cpu_info
    from ..errors import SwiftFormerError
    from ..formats import IOS, PRECISIONS
    from . import quiet_converters

    models = args.models.split(",") if args.models else list(DEFAULT_MODELS)
    precisions = args.precision.split(",")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise SwiftFormerError(f"unknown precision {unknown[0]!r}; choose from {','.join(PRECISIONS)}")
    backends = _backends(args.backends)
    ios = args.io.split(",")
    if not ios or any(io not in IOS for io in ios):
        raise SwiftFormerError(f"--io {args.io}: a comma-separated subset of {','.join(IOS)}")
    quiet_converters(args.verbose, uses_nncf="int8" in precisions and "openvino" in backends)
    calibration = _calibration(args)
    log.info("%d threads, %s", args.threads, allocator)  # once the arguments hold: no line before a one-line error
    result = run_benchmark(
        models, backends, batch=args.batch, img_size=args.img_size, threads=args.threads,
        rounds=args.rounds, iters=args.iters, allocator=allocator, log=log.info, precisions=precisions,
        calibration=calibration, ios=ios,
    )
    print(format_table(result.records))
    for reason in result.skipped:
        print(f"skipped {reason}")
    lines, summary = summary_lines(result, args.batch)
    print("\n".join(lines))
    summary.update(command=" ".join(["swiftformer"] + sys.argv[1:]), threads=args.threads, allocator=allocator,
                   cpu=cpu_info().model or platform.processor() or platform.machine(), isa=cpu_info().isa(),
                   skipped=result.skipped, torch=__import__("torch").__version__)
    if args.json:
        write_json(result.records, args.json, summary)
    if args.csv:
        write_csv(result.records, args.csv)
    if args.plot:
        plot_latency_vs_top1(result, args.plot, f"batch 1, {args.threads} threads, {args.img_size} px")
    return 0


def _calibration(args: argparse.Namespace):
    """The int8 calibration images (real photos, SwiftFormer's eval transform at ``--img-size``), or ``None``."""
    if not args.calibration:
        return None
    if "int8" not in args.precision.split(","):
        print(f"note: --calibration is not used: only int8 is calibrated, and --precision is {args.precision}")
        return None
    from ..calibration import calibration_images, load_batch
    from ..data import eval_transform
    from ..recipes import TrainConfig

    chosen = calibration_images(args.calibration, args.calibration_size)
    log.info("int8 calibration: %s", chosen.describe(args.calibration))
    if len(chosen.paths) < args.calibration_size:
        log.warning("%s holds %d images, fewer than --calibration-size %d: int8 is calibrated on all of them",
                    args.calibration, len(chosen.paths), args.calibration_size)
    return load_batch(chosen, eval_transform(None, TrainConfig(img_size=args.img_size))).images


def run(args: argparse.Namespace) -> int:
    from ..allocator import describe_allocator, tune_malloc
    from ..checkpoint import check_destination

    for path in (args.json, args.csv, args.plot):
        if path:
            check_destination(path)  # before minutes of timing

    allocator = describe_allocator(tune_malloc())  # already applied by the CLI's main(); idempotent
    return _run_models(args, allocator)
