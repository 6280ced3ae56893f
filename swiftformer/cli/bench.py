"""``swiftformer bench``: latency/throughput of SwiftFormer and its peers per backend, or attention scaling.

    swiftformer bench --threads 2 --batch 32 --json bench.json --csv bench.csv --plot latency_vs_top1.png
    swiftformer bench --models swiftformer_s,timm/mobilevitv2_100 --backends fused,onnxruntime,openvino,executorch
    swiftformer bench --attention --plot attention_scaling.png
    swiftformer bench --models swiftformer_xs --backends onnxruntime,openvino --precision fp32,bf16,int8 \
        --calibration ../shared/data/cifar10-mini/train
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys

log = logging.getLogger("swiftformer.bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench import BACKENDS, DEFAULT_BACKENDS

    parser.add_argument("--attention", action="store_true", help="time the four attentions vs token count instead")
    parser.add_argument("--models", default=None, help="comma-separated; ours by name, peers as timm/<name> (default: all)")
    parser.add_argument(
        "--backends", default=",".join(DEFAULT_BACKENDS), help=f"comma-separated subset of {','.join(BACKENDS)}"
    )
    parser.add_argument("--batch", type=int, default=1, help="also measure throughput at this batch size (> 1)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every backend")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--iters", type=int, default=3, help="calls per runner and round at batch 1")
    parser.add_argument("--json", default=None, help="write the records here")
    parser.add_argument("--csv", default=None, help="write the records here")
    parser.add_argument("--plot", default=None, help="PNG: latency vs top-1, or attention time vs tokens")
    parser.add_argument("--precision", default="fp32", help="comma-separated subset of fp32,fp16,bf16,int8")
    parser.add_argument("--calibration", default=None, help="folder of real images to calibrate int8 on")
    parser.add_argument("--calibration-size", type=int, default=64, help="calibration images (default 64)")


def _summary_lines(result, batch: int) -> tuple[list[str], dict]:
    """The issue-4 comparisons that the records allow."""
    from ..bench import speedup
    from ..models import list_models

    lines, summary = [], {"matmul_gflops": result.matmul_gflops}
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
    return lines, summary


def _run_models(args: argparse.Namespace, allocator: str) -> int:
    from ..bench import DEFAULT_MODELS, format_table, plot_latency_vs_top1, run_benchmark, write_csv, write_json

    from ..cpu import cpu_info
    from ..quantize import ALL_PRECISIONS

    models = args.models.split(",") if args.models else list(DEFAULT_MODELS)
    precisions = args.precision.split(",")
    unknown = [p for p in precisions if p not in ALL_PRECISIONS]
    if unknown:
        from ..errors import SwiftFormerError

        raise SwiftFormerError(f"unknown precision {unknown[0]!r}; choose from {','.join(ALL_PRECISIONS)}")
    result = run_benchmark(
        models, args.backends.split(","), batch=args.batch, img_size=args.img_size, threads=args.threads,
        rounds=args.rounds, iters=args.iters, allocator=allocator, log=log.info, precisions=precisions,
        calibration=_calibration(args),
    )
    print(format_table(result.records))
    for reason in result.skipped:
        print(f"skipped {reason}")
    lines, summary = _summary_lines(result, args.batch)
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
    from ..calibration import calibration_and_check, load_batch
    from ..data_config import eval_transform
    from ..models import create_model

    chosen, _ = calibration_and_check(args.calibration, args.calibration_size)
    return load_batch(chosen, eval_transform(create_model("swiftformer_xs"), args.img_size)).images


def _run_attention(args: argparse.Namespace) -> int:
    from ..bench import ATTENTION_TOKENS, attention_exponents, plot_attention_scaling, run_attention_benchmark

    rows = run_attention_benchmark(threads=args.threads, rounds=args.rounds, iters=args.iters)
    print(f"{'attention':<18}" + "".join(f"{f'N={n}':>12}" for n in ATTENTION_TOKENS) + f"{'exp all':>9}{'exp 3136+':>10}")
    overall = attention_exponents(rows)
    large = attention_exponents(rows, low=3136)
    for name in overall:
        times = [row["median_ms"] for row in rows if row["attention"] == name]
        print(f"{name:<18}" + "".join(f"{t:>10.3f}ms" for t in times) + f"{overall[name]:>9.2f}{large[name]:>10.2f}")
    top = max(ATTENTION_TOKENS)
    at_top = {row["attention"]: row["median_ms"] for row in rows if row["tokens"] == top}
    for name in ("additive", "additive (fused)"):
        print(f"{name} vs mhsa at N={top}: {at_top['mhsa'] / at_top[name]:.1f}x faster")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "exponent_all": overall, "exponent_3136_12544": large,
                       "threads": args.threads}, handle, indent=1)
    if args.plot:
        plot_attention_scaling(rows, args.plot, f"Token mixers at width 64, batch 1, {args.threads} threads")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..allocator import describe_allocator, tune_malloc

    allocator = describe_allocator(tune_malloc())  # already applied by the CLI's main(); idempotent
    log.info("%d threads, %s", args.threads, allocator)
    return _run_attention(args) if args.attention else _run_models(args, allocator)
