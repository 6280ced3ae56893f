"""Batch-1 CPU latency of our eager model, our fused model and timm's ``swiftformer_*``, same weights.

    .venv/bin/python benchmarks/bench_fused.py --threads 2 --rounds 15

Each round times every implementation once (a median of ``--iters`` calls) in an interleaved order, so
a change of machine load hits all of them alike; the table reports the median over rounds and the
speed-up of each over timm. glibc malloc is tuned as every ``swiftformer`` command tunes it
(:func:`swiftformer.allocator.tune_malloc`; the same process, so timm gets it too); ``--default-malloc``
measures with glibc defaults; ``--ablation`` adds the same fused model (toggled per call, same rounds) on PyTorch's
plain ops instead of oneDNN's pre-packed kernels (``swiftformer.models.onednn.ENABLED = False``: 3x3 convolutions
through ``nn.Conv2d``, every MLP on MKL GEMMs);
``--stages`` times timm and the fused model stage by stage (minimum over interleaved passes), to show where the
time goes.
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import swiftformer
from swiftformer.allocator import describe_allocator, tune_malloc
from swiftformer.convert import from_native
from swiftformer.models import onednn


def time_call(fn, x: torch.Tensor, iters: int) -> float:
    """Median wall time of ``fn(x)`` in milliseconds over ``iters`` calls."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def without_packing(model: torch.nn.Module):
    """``model`` called on PyTorch's plain ops (``onednn.ENABLED = False`` for the call, restored after it)."""
    def call(x: torch.Tensor) -> torch.Tensor:
        onednn.ENABLED = False
        try:
            return model(x)
        finally:
            onednn.ENABLED = True
    return call


def same_weight_models(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our eval model and timm's ``name``, holding the same (random) weights."""
    ours = swiftformer.create_model(name).eval()
    theirs = timm.create_model(name).eval()
    theirs.load_state_dict(from_native(ours.state_dict(), "timm"))
    return ours, theirs


def bench_variant(name: str, img_size: int, rounds: int, iters: int, ablation: bool) -> dict[str, float]:
    ours, theirs = same_weight_models(name)
    fused = swiftformer.reparameterize(ours)
    x = torch.randn(1, 3, img_size, img_size)
    impls = {"timm": theirs, "eager": ours, "fused": fused}
    if ablation:
        impls["no packing"] = without_packing(fused)
    with torch.inference_mode():
        reference = theirs(x)
        for label, model in impls.items():
            assert (model(x) - reference).abs().max() < 1e-4, f"{label} disagrees with timm"
            for _ in range(5):  # warm-up
                model(x)
        samples: dict[str, list[float]] = {label: [] for label in impls}
        for round_index in range(rounds):
            order = list(impls) if round_index % 2 == 0 else list(reversed(impls))
            for label in order:
                samples[label].append(time_call(impls[label], x, iters))
    return {label: statistics.median(values) for label, values in samples.items()}


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
    parser.add_argument("--ablation", action="store_true",
                        help="also time the fused model on plain ops (no oneDNN packing)")
    parser.add_argument("--stages", type=int, default=0, metavar="PASSES",
                        help="instead, time timm and fused stage by stage over PASSES passes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = not args.default_malloc and tune_malloc()
    timing = (f"minimum of {args.stages} interleaved passes per stage" if args.stages
              else f"median of {args.rounds} interleaved rounds x {args.iters} calls")
    print(f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, batch 1, {args.img_size}px, "
          f"{timing}, {describe_allocator(tuned)}")
    if args.stages:
        for name in args.models.split(","):
            print(f"| {name} | timm (ms) | fused (ms) | fused vs timm |\n|---|---:|---:|---:|")
            rows = stage_times(name, args.img_size, args.stages)
            for stage, theirs_ms, fused_ms in rows + [("sum", sum(r[1] for r in rows), sum(r[2] for r in rows))]:
                print(f"| {stage} | {theirs_ms:.2f} | {fused_ms:.2f} | {theirs_ms / fused_ms:.2f}x |", flush=True)
        return
    ablation = " fused, no packing (ms) | no packing vs timm |" if args.ablation else ""
    print(f"| model | timm eager (ms) | ours eager (ms) | ours fused (ms) | eager vs timm | fused vs timm |{ablation}")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.ablation else ""))
    for name in args.models.split(","):
        ms = bench_variant(name, args.img_size, args.rounds, args.iters, args.ablation)
        row = (f"| {name} | {ms['timm']:.2f} | {ms['eager']:.2f} | {ms['fused']:.2f} | "
               f"{ms['timm'] / ms['eager']:.2f}x | {ms['timm'] / ms['fused']:.2f}x |")
        if args.ablation:
            row += f" {ms['no packing']:.2f} | {ms['timm'] / ms['no packing']:.2f}x |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
