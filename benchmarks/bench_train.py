"""Training throughput: our training step with its speed options vs a plain timm SwiftFormer-XS step.

Both take batch 32 at 224x224 on 2 threads and do forward, loss, backward and an AdamW step. Each
measurement runs in a fresh process (allocator and OpenMP settings are per process), alternating
baseline and ours round by round so that both see the same machine load; the figure is the median.

    python benchmarks/bench_train.py                 # default: 5 rounds x (3 warm-up + 6 timed steps)
    python benchmarks/bench_train.py --rounds 3 --steps 4 --ablation   # also each option on its own

- baseline: ``timm.create_model("swiftformer_xs")``, ``torch.optim.AdamW`` defaults, fp32, NCHW, glibc malloc,
  default OpenMP settings.
- ours: :func:`swiftformer.engine.train_one_epoch` (the real training step) as ``swiftformer train`` runs it by
  default: channels-last maps, on which the MLPs' 1x1 convolutions run as GEMMs
  (:class:`swiftformer.models.swiftformer.PointwiseConv2d`), the fused AdamW kernel, and glibc malloc tuned by
  :func:`swiftformer.allocator.tune_malloc` (what every ``swiftformer`` command does). The ablation measures
  each option alone, ``torch.compile`` on top (its warm-up steps include the compilation), jemalloc/tcmalloc
  (``LD_PRELOAD``), ``OMP_WAIT_POLICY=PASSIVE`` (helps only on shared cores) and bf16 autocast (slower on CPUs
  without native bf16, such as AVX2-only ones).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BATCH, IMG_SIZE, THREADS = 32, 224, 2
ALLOCATORS = {
    "jemalloc": ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/lib/x86_64-linux-gnu/libjemalloc.so.2"],
    "tcmalloc": ["/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"],
}
# name -> (step kind, step options, environment); "ours" is everything a user would switch on
CONFIGS = {
    "timm baseline": ("timm", {}, {}),
    "ours": ("ours", {"channels_last": True, "fused": True}, {"malloc": "tuned"}),
}
ABLATION = {
    "ours, plain": ("ours", {}, {}),
    "+ tuned glibc malloc": ("ours", {}, {"malloc": "tuned"}),
    "+ torch.compile": ("ours", {"compile": True}, {}),
    "+ channels-last (GEMM 1x1 convs)": ("ours", {"channels_last": True}, {}),
    "+ fused AdamW": ("ours", {"fused": True}, {}),
    "+ OMP_WAIT_POLICY=PASSIVE": ("ours", {}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "+ jemalloc": ("ours", {}, {"allocator": "jemalloc"}),
    "+ tcmalloc": ("ours", {}, {"allocator": "tcmalloc"}),
    "ours + torch.compile": ("ours", {"channels_last": True, "fused": True, "compile": True}, {"malloc": "tuned"}),
    "ours + bf16 autocast": ("ours", {"channels_last": True, "fused": True, "amp": "bf16"}, {"malloc": "tuned"}),
}


def _batches(count: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, IMG_SIZE, IMG_SIZE, generator=generator)
    targets = torch.randint(0, 1000, (BATCH,), generator=generator)
    return [(images, targets)] * count


def timm_steps(warmup: int, steps: int) -> float:
    """Seconds for ``steps`` plain timm training steps."""
    import timm
    import torch

    model = timm.create_model("swiftformer_xs").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    start = 0.0
    for index, (images, targets) in enumerate(_batches(warmup + steps)):
        if index == warmup:
            start = time.perf_counter()
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def our_steps(
    warmup: int, steps: int, channels_last: bool = False, fused: bool = False, amp: str = "none", compile: bool = False
) -> float:
    """Seconds for ``steps`` updates of :func:`swiftformer.engine.train_one_epoch`."""
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from swiftformer import create_model
    from swiftformer.engine import StepOptions, memory_format, train_one_epoch
    from swiftformer.losses import DistillationLoss

    device = torch.device("cpu")
    model = create_model("swiftformer_xs").to(memory_format=memory_format(channels_last))
    train_model = torch.compile(model) if compile else model
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.0, **({"fused": True} if fused else {}))
    scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=1, step_on_epochs=False, updates_per_epoch=warmup + steps)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    criterion = DistillationLoss(torch.nn.CrossEntropyLoss(), None)
    options = StepOptions(amp=amp, channels_last=channels_last)
    step = 0
    _, step = train_one_epoch(train_model, criterion, _batches(warmup), optimizer, scheduler, scaler, device, 0, step, options=options)
    start = time.perf_counter()
    train_one_epoch(train_model, criterion, _batches(steps), optimizer, scheduler, scaler, device, 1, step, options=options)
    return time.perf_counter() - start


def worker(args: argparse.Namespace) -> None:
    import torch

    from swiftformer.allocator import tune_malloc

    torch.set_num_threads(THREADS)
    kind, options, settings = {**CONFIGS, **ABLATION}[args.worker]
    if settings.get("malloc") == "tuned" and not tune_malloc():
        raise SystemExit("could not tune glibc malloc (mallopt unavailable)")
    seconds = timm_steps(args.warmup, args.steps) if kind == "timm" else our_steps(args.warmup, args.steps, **options)
    print(json.dumps({"images_per_second": BATCH * args.steps / seconds}))


def environment(settings: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    for key in ("LD_PRELOAD", "OMP_WAIT_POLICY"):
        env.pop(key, None)
    for key, value in settings.items():
        if key == "malloc":  # applied inside the worker
            continue
        if key == "allocator":
            library = next((p for p in ALLOCATORS[value] if Path(p).exists()), None)
            if library is None:
                raise SystemExit(f"{value} not found: apt-get install {'libjemalloc2' if value == 'jemalloc' else 'libtcmalloc-minimal4'}")
            env["LD_PRELOAD"] = library
        else:
            env[key] = value
    return env


def measure(name: str, args: argparse.Namespace) -> float:
    env = environment({**CONFIGS, **ABLATION}[name][2])
    command = [sys.executable, __file__, "--worker", name, "--warmup", str(args.warmup), "--steps", str(args.steps)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--ablation", action="store_true", help="also measure each speed option on its own")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    names = list(CONFIGS) + (list(ABLATION) if args.ablation else [])
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names:
            results[name].append(measure(name, args))
            print(f"  {name}: {results[name][-1]:.1f} images/s", flush=True)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in results.items()), flush=True)
    baseline = statistics.median(results["timm baseline"])
    print(f"\nSwiftFormer-XS training step, batch {BATCH} at {IMG_SIZE}x{IMG_SIZE}, {THREADS} threads, "
          f"median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'configuration':<34}{'images/s':>10}{'speed-up':>10}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<34}{median:>10.1f}{median / baseline:>9.2f}x")


if __name__ == "__main__":
    main()
