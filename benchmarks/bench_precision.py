"""fp32 vs bf16/fp16/int8 artefacts per runtime, side by side: latency at batch 1 and N, agreement and top-1.

    .venv/bin/python benchmarks/bench_precision.py --models swiftformer_xs \
        --checkpoint runs/cifar10_mini/best.pth --data ../shared/data/cifar10-mini --threads 2 --batch 32

Times come from ``swiftformer.bench.run_benchmark`` (interleaved rounds, medians; random weights, with int8
calibrated on real photos), beside timm's fp32 eager model of the same variant. Agreement with fp32 PyTorch and
top-1 come from ``swiftformer export --precision`` on held-out photos of ``--data``/val, for each variant whose
trained run is in ``--checkpoint`` (a model with random weights has near-uniform logits, so its agreement would
mean nothing and is not reported). A thousand val photos put a standard error of about 0.3 points on a top-1
change; ``--check-train N`` checks the same artefact on up to N photos of ``--data``/train that calibration did not
use as well, and ``--no-timing`` skips the times.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from swiftformer.agreement import Agreement, top1_change_text
from swiftformer.artefacts import read_info
from swiftformer.bench import FORMAT_OF, precision_skip_reason, run_benchmark, speedup
from swiftformer.calibration import ImageBatch, calibration_and_check, calibration_images, check_images, load_batch
from swiftformer.cli.numbers import non_negative_int
from swiftformer.cpu import cpu_info
from swiftformer.data import eval_transform
from swiftformer.export import check_agreement, export_model
from swiftformer.formats import FORMATS
from swiftformer.inference import LoadedModel, load_model, run_config
from swiftformer.models import reparameterize
from swiftformer.recipes import TrainConfig

BACKENDS = ("onnxruntime", "openvino", "executorch", "litert")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class TrainedRun:
    """A trained checkpoint with its photos, read through its own eval transform at the size it was trained at."""

    loaded: LoadedModel
    img_size: int
    calibration: ImageBatch
    pools: dict[str, ImageBatch]  # "val" and, when asked for, "train" (photos calibration did not use)


def trained_run(checkpoint: str, data: Path, calibration_size: int, check_size: int,
                train_check_size: int) -> TrainedRun:
    """Read before any LiteRT export: litert-torch starts JAX's threads, and the photo loaders fork."""
    loaded = load_model(checkpoint)
    img_size = (loaded.run_config or {}).get("img_size", 224)
    transform = eval_transform(loaded.model, run_config(loaded, {"img_size": img_size}))
    chosen, held_out = calibration_and_check(data / "train", calibration_size, None, max(train_check_size, 1))
    pools = {"val": load_batch(check_images(data / "val", check_size), transform)}
    if train_check_size:
        pools["train"] = load_batch(held_out, transform)
    return TrainedRun(loaded, img_size, load_batch(chosen, transform), pools)


def agreements(run: TrainedRun, pairs: list[tuple[str, str]]) -> dict[tuple[str, str, str, str], Agreement]:
    """(variant, backend, precision, pool) -> agreement with fp32 PyTorch of the ``run``'s artefact of each
    (backend, precision) of ``pairs`` on each of its photo pools."""
    loaded, settings = run.loaded, run.loaded.run_config or {}
    fused = reparameterize(loaded.model, channels_last=False)
    found = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for backend, precision in pairs:
            fmt = FORMAT_OF[backend]
            path = Path(tmp) / f"m{FORMATS[fmt].suffix}"
            exported = export_model(
                loaded.model, fmt, path, img_size=(run.img_size, run.img_size), precision=precision,
                calibration=run.calibration, check=run.pools["val"], min_agreement=0.0,
                class_names=loaded.class_names, crop_pct=settings.get("crop_pct"),
                interpolation=settings.get("interpolation"),
            )
            found[(loaded.model.variant, backend, precision, "val")] = exported.agreement
            if "train" in run.pools:
                found[(loaded.model.variant, backend, precision, "train")] = check_agreement(
                    fused, path, read_info(path), run.pools["train"], 0.0)
    return found


def print_agreements(found: dict[tuple[str, str, str, str], Agreement]) -> None:
    print(f"\n{'model':<16}{'backend':<13}{'prec':<6}{'photos':<7}{'images':>7}{'agree %':>9}{'max |dp|':>10}"
          f"{'mean |dp|':>11}{'top-1 fp32':>12}{'top-1':>7}{'change':>14}")
    for (model, backend, precision, pool), row in found.items():
        labelled = row.reference_top1 is not None
        print(f"{model:<16}{backend:<13}{precision:<6}{pool:<7}{row.images:>7}{100 * row.agreement:>9.2f}"
              f"{row.max_prob_diff:>10.4f}{row.mean_prob_diff:>11.5f}"
              + (f"{row.reference_top1:>12.2f}{row.artefact_top1:>7.2f}{top1_change_text(row):>14}" if labelled
                 else f"{'-':>12}{'-':>7}{'-':>14}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="swiftformer_xs", help="comma-separated variants")
    parser.add_argument("--checkpoint", default=None,
                        help="comma-separated trained runs (best.pth) of the variants, for agreement and top-1")
    parser.add_argument("--data", required=True, help="ImageFolder root with train/ (calibration) and val/ (check)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of "
                        + ",".join(BACKENDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--calibration-size", type=int, default=256)
    parser.add_argument("--check-size", type=int, default=1000)
    parser.add_argument("--check-train", type=non_negative_int, default=0, metavar="N",
                        help="also check on up to N train photos that calibration did not use")
    parser.add_argument("--no-timing", action="store_true", help="agreement and top-1 only")
    args = parser.parse_args()
    data = Path(args.data)
    models = args.models.split(",")
    backends = args.backends.split(",")
    info = cpu_info()

    runs = [trained_run(checkpoint, data, args.calibration_size, args.check_size, args.check_train)
            for checkpoint in (args.checkpoint.split(",") if args.checkpoint else [])]
    result = None
    if not args.no_timing:
        chosen = calibration_images(data / "train", args.calibration_size)
        calibration = load_batch(chosen, eval_transform(None, TrainConfig(img_size=args.img_size))).images
        result = run_benchmark(
            models + [f"timm/{name}" for name in models], ["eager", *backends], batch=args.batch,
            img_size=args.img_size, threads=args.threads, rounds=args.rounds, iters=args.iters,
            precisions=PRECISIONS, calibration=calibration, peer_backends=("eager",), log=print,
        )
    found = {}
    for run in runs:
        if result is None:  # what run_benchmark would have timed
            pairs = [(backend, precision) for backend in backends for precision in PRECISIONS[1:]
                     if not precision_skip_reason(backend, precision, info, calibrated=True)]
        else:
            pairs = [(record.backend, record.precision) for record in result.records
                     if record.batch == 1 and record.precision != "fp32" and record.model == run.loaded.model.variant]
        found.update(agreements(run, pairs))
    print(f"\n{info.model}, {', '.join(info.isa())}, {args.threads} threads, {args.img_size} px")
    if result is not None:
        print(f"{'model':<16}{'backend':<13}{'prec':<6}{'batch':>6}{'median ms':>11}{'vs fp32':>9}{'vs timm':>9}")
        for record in result.records:
            if record.model.startswith("timm/"):
                continue
            same_fp32 = result.find(record.model, record.backend, record.batch)
            timm = result.find(f"timm/{record.model}", "eager", record.batch)
            print(f"{record.model:<16}{record.backend:<13}{record.precision:<6}{record.batch:>6}"
                  f"{record.median_ms:>11.2f}"
                  f"{speedup(same_fp32.median_ms, record.median_ms) if same_fp32 else float('nan'):>8.2f}x"
                  f"{speedup(timm.median_ms, record.median_ms) if timm else float('nan'):>8.2f}x")
        for reason in result.skipped:
            print(f"skipped {reason}")
        print("\n".join(result.steadiness_lines()))
    if found:
        print_agreements(found)


if __name__ == "__main__":
    main()
