"""fp32 vs bf16/fp16/int8 artefacts per runtime, side by side: latency at batch 1 and N, agreement and top-1.

    .venv/bin/python benchmarks/bench_precision.py --models swiftformer_xs \
        --checkpoint runs/cifar10_mini/best.pth --data ../shared/data/cifar10-mini --threads 2 --batch 32

Times come from ``swiftformer.bench.run_benchmark`` (interleaved rounds, medians; random weights, with int8
calibrated on real photos), beside timm's fp32 eager model of the same variant. Agreement with fp32 PyTorch and
top-1 come from ``swiftformer export --precision`` on held-out photos of ``--data``/val, for each variant whose
trained run is in ``--checkpoint`` (a model with random weights has near-uniform logits, so its agreement would
mean nothing and is not reported).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from swiftformer.agreement import Agreement, top1_change_text
from swiftformer.bench import FORMAT_OF, BenchResult, run_benchmark, speedup
from swiftformer.calibration import calibration_images, check_images, load_batch
from swiftformer.cpu import cpu_info
from swiftformer.data import eval_transform
from swiftformer.export import SUFFIXES, export_model
from swiftformer.inference import load_model, run_config
from swiftformer.recipes import TrainConfig

BACKENDS = ("onnxruntime", "openvino", "executorch", "litert")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def agreements(checkpoint: str, data: Path, result: BenchResult, calibration_size: int,
               check_size: int) -> dict[tuple[str, str, str], Agreement]:
    """(variant, backend, precision) -> agreement of that artefact of the trained ``checkpoint`` with fp32 PyTorch on
    held-out photos of ``data``/val, at the image size the checkpoint was trained at."""
    loaded = load_model(checkpoint)
    run = loaded.run_config or {}
    img_size = run.get("img_size", 224)
    transform = eval_transform(loaded.model, run_config(loaded, {"img_size": img_size}))
    calibration = load_batch(calibration_images(data / "train", calibration_size), transform)
    check = load_batch(check_images(data / "val", check_size), transform)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for record in result.records:
            if record.batch != 1 or record.precision == "fp32" or record.model != loaded.model.variant:
                continue
            fmt = FORMAT_OF[record.backend]
            exported = export_model(
                loaded.model, fmt, Path(tmp) / f"m{SUFFIXES[fmt]}", img_size=(img_size, img_size),
                precision=record.precision, calibration=calibration, check=check, min_agreement=0.0,
                class_names=loaded.class_names,
                crop_pct=run.get("crop_pct"), interpolation=run.get("interpolation"),
            )
            found[(record.model, record.backend, record.precision)] = exported.agreement
    return found


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
    args = parser.parse_args()
    data = Path(args.data)
    models = args.models.split(",")

    chosen = calibration_images(data / "train", args.calibration_size)
    calibration = load_batch(chosen, eval_transform(None, TrainConfig(img_size=args.img_size))).images
    result = run_benchmark(
        models + [f"timm/{name}" for name in models], ["eager", *args.backends.split(",")], batch=args.batch,
        img_size=args.img_size, threads=args.threads, rounds=args.rounds, iters=args.iters, precisions=PRECISIONS,
        calibration=calibration, peer_backends=("eager",), log=print,
    )
    found = {}
    for checkpoint in args.checkpoint.split(",") if args.checkpoint else []:
        found.update(agreements(checkpoint, data, result, args.calibration_size, args.check_size))
    info = cpu_info()
    print(f"\n{info.model}, {', '.join(info.isa())}, {args.threads} threads, {args.img_size} px")
    print(f"{'model':<16}{'backend':<13}{'prec':<6}{'batch':>6}{'median ms':>11}{'vs fp32':>9}{'vs timm':>9}"
          f"{'agree %':>9}{'top-1 fp32':>12}{'top-1':>7}{'change':>14}")
    for record in result.records:
        if record.model.startswith("timm/"):
            continue
        same_fp32 = result.find(record.model, record.backend, record.batch)
        timm = result.find(f"timm/{record.model}", "eager", record.batch)
        agreement = found.get((record.model, record.backend, record.precision)) if record.batch == 1 else None
        quality = (f"{100 * agreement.agreement:>9.2f}"
                   + (f"{agreement.reference_top1:>12.2f}{agreement.artefact_top1:>7.2f}"
                      f"{top1_change_text(agreement):>14}"
                      if agreement.reference_top1 is not None else f"{'-':>12}{'-':>7}{'-':>14}")
                   if agreement else f"{'-':>9}{'-':>12}{'-':>7}{'-':>14}")
        print(f"{record.model:<16}{record.backend:<13}{record.precision:<6}{record.batch:>6}{record.median_ms:>11.2f}"
              f"{speedup(same_fp32.median_ms, record.median_ms) if same_fp32 else float('nan'):>8.2f}x"
              f"{speedup(timm.median_ms, record.median_ms) if timm else float('nan'):>8.2f}x{quality}")
    for reason in result.skipped:
        print(f"skipped {reason}")


if __name__ == "__main__":
    main()
