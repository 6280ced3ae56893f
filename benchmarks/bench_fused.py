"""Batch-1 CPU latency of our eager model, our fused model and timm's ``swiftformer_*``, same weights.

    .venv/bin/python benchmarks/bench_fused.py --threads 2 --rounds 15 --json

``--json`` writes the table as a record in ``benchmarks/results/`` (date, CPU, command; :mod:`records`).

Each round times every implementation ``--iters`` times in an interleaved order
(:func:`swiftformer.bench.time_interleaved`, the harness ``swiftformer bench`` uses), so a change of machine load
hits all of them alike; the table reports the median call and the speed-up of each over timm, under a header
naming the CPU and its instruction sets. glibc malloc is tuned as every ``swiftformer`` command tunes it
(:func:`swiftformer.allocator.tune_malloc`; the same process, so timm gets it too); ``--default-malloc``
measures with glibc defaults; ``--stages`` times timm and the fused model stage by stage (minimum over interleaved passes), to show where the
time goes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import timm
import torch

import swiftformer
from swiftformer import cpu
from swiftformer.allocator import describe_allocator, tune_malloc
from swiftformer.bench import summarize, time_interleaved, torch_runner
from swiftformer.convert import from_native

from records import write_record


def same_weight_models(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our eval model and timm's ``name``, holding the same (random) weights."""
    ours = swiftformer.create_model(name).eval()
    theirs = timm.create_model(name).eval()
    theirs.load_state_dict(from_native(ours.state_dict(), "timm"))
    return ours, theirs


def bench_variant(name: str, img_size: int, rounds: int, iters: int) -> dict[str, float]:
    """Median batch-1 latency (ms) of timm's, our eager and our fused model, same weights."""
    ours, theirs = same_weight_models(name)
    impls = {"timm": theirs, "eager": ours, "fused": swiftformer.reparameterize(ours)}
    x = torch.randn(1, 3, img_size, img_size)
    with torch.inference_mode():
        reference = theirs(x)
        for label, model in impls.items():
            assert (model(x) - reference).abs().max() < 1e-4, f"{label} disagrees with timm"
    runners = {label: torch_runner(model, x) for label, model in impls.items()}
    samples = time_interleaved(runners, warmup=5, rounds=rounds, iters=iters)
    return {label: summarize(times)[0] for label, times in samples.items()}


def stage_times(name: str, img_size: int, passes: int) -> list[tuple[str, float, float]]:
    """(stage, timm ms, fused ms) for stem, the four stages and the head: minimum over ``passes`` interleaved passes."""
    ours, theirs = same_weight_models(name)
    body = swiftformer.reparameterize(ours).body
    parts = {
        "timm": [theirs.stem, *theirs.stages, lambda x: theirs.forward_head(theirs.norm(x))],
        "fused": [body[0], *body[1], body[2]],
    }
    x = torch.randn(1, 3, img_size, img_size)
    best = {label: [float("inf")] * len(stages) for label, stages in parts.items()}
    with torch.inference_mode():
        for index in range(passes + 3):  # the first 3 passes warm up
            for label in (list(parts) if index % 2 == 0 else list(reversed(parts))):
                y = x
                for stage_index, stage in enumerate(parts[label]):
                    start = time.perf_counter()
                    y = stage(y)
                    if index >= 3:
                        best[label][stage_index] = min(best[label][stage_index], (time.perf_counter() - start) * 1e3)
    names = ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
    return [(stage, best["timm"][i], best["fused"][i]) for i, stage in enumerate(names)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(swiftformer.list_models()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc malloc's default settings")
    parser.add_argument("--stages", type=int, default=0, metavar="PASSES",
                        help="instead, time timm and fused stage by stage over PASSES passes")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the table as a record (default path: benchmarks/results/DATE_CPU_fused.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = not args.default_malloc and tune_malloc()
    timing = (f"minimum of {args.stages} interleaved passes per stage" if args.stages
              else f"median of {args.rounds} interleaved rounds x {args.iters} calls")
    print(f"{cpu.describe(args.threads)}; torch {torch.__version__}, timm {timm.__version__}, batch 1, "
          f"{args.img_size}px, {timing}, {describe_allocator(tuned)}")
    if args.stages:
        for name in args.models.split(","):
            print(f"| {name} | timm (ms) | fused (ms) | fused vs timm |\n|---|---:|---:|---:|")
            rows = stage_times(name, args.img_size, args.stages)
            for stage, theirs_ms, fused_ms in rows + [("sum", sum(r[1] for r in rows), sum(r[2] for r in rows))]:
                print(f"| {stage} | {theirs_ms:.2f} | {fused_ms:.2f} | {theirs_ms / fused_ms:.2f}x |", flush=True)
        return
    print("| model | timm eager (ms) | ours eager (ms) | ours fused (ms) | eager vs timm | fused vs timm |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for name in args.models.split(","):
        ms = rows[name] = bench_variant(name, args.img_size, args.rounds, args.iters)
        print(f"| {name} | {ms['timm']:.2f} | {ms['eager']:.2f} | {ms['fused']:.2f} | "
              f"{ms['timm'] / ms['eager']:.2f}x | {ms['timm'] / ms['fused']:.2f}x |", flush=True)
    if args.json is not None:
        settings = {"threads": args.threads, "img_size": args.img_size, "batch": 1, "timing": timing,
                    "allocator": describe_allocator(tuned), "timm": timm.__version__}
        path = write_record("fused", {"settings": settings, "median_ms": rows}, Path(args.json) if args.json else None)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
