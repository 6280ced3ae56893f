"""Per-block int8 sensitivity of a trained SwiftFormer under ONNX Runtime static quantization.

    .venv/bin/python benchmarks/quant_sensitivity.py --checkpoint runs/cifar10_mini/best.pth \
        --data ../shared/data/cifar10-mini --calibration-size 256 --check-size 1000

Quantizes one block (or op group) at a time, everything else left in fp32, and reports its top-1 agreement with
fp32 PyTorch on held-out photos of ``--data``/val; then everything, and everything but each op group. A block
whose agreement alone falls well below the others is the one to keep in float (``nodes_to_exclude``).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
import torch

from swiftformer.agreement import compare, format_table, model_labels
from swiftformer.artefacts import artefact_info
from swiftformer.calibration import calibration_images, check_images, load_batch
from swiftformer.cpu import cpu_info
from swiftformer.deploy import onnx as onnx_runtime
from swiftformer.inference import load_model
from swiftformer.models import reparameterize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a training run of ours (best.pth)")
    parser.add_argument("--data", required=True, help="ImageFolder root with train/ (calibration) and val/ (check)")
    parser.add_argument("--calibration-size", type=int, default=256)
    parser.add_argument("--check-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", action="store_true", help="also quantize each block alone (slow: one run each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.checkpoint)
    run = loaded.run_config or {}
    size = run.get("img_size", 224)
    transform = artefact_info(loaded.model, "onnx", "int8", (size, size), 1, 1, loaded.class_names,
                              run.get("crop_pct"), run.get("interpolation")).transform()
    data = Path(args.data)
    calibration = load_batch(calibration_images(data / "train", args.calibration_size), transform).images
    check = load_batch(check_images(data / "val", args.check_size), transform)
    labels = model_labels(check.labels, check.class_names, loaded.class_names)
    fused = reparameterize(loaded.model, channels_last=False)
    with torch.no_grad():
        reference = fused(check.images)

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx_runtime.write_fp32(fused, check.images[:1], Path(tmp) / "fp32.onnx")
        prepared = onnx.load(str(onnx_runtime.prepared(fp32, Path(tmp) / "prepared.onnx"))).graph
        blocks = onnx_runtime.blocks(prepared)
        everything = [name for block, names in blocks.items() if block != "products" for name in names]

        def measure(label: str, nodes: list[str] | None = None, exclude: list[str] | None = None) -> None:
            out = onnx_runtime.write_int8(fp32, Path(tmp) / "int8.onnx", calibration, 1, nodes, exclude)
            session = onnx_runtime.runner(out, args.threads)
            logits = torch.cat([session(image[None]) for image in check.images])
            rows[label] = compare(reference, logits, labels)
            print(format_table({label: rows[label]}).splitlines()[1], flush=True)

        measure("all int8", exclude=[])
        measure("no products", exclude=blocks["products"])
        measure("no head", exclude=blocks.get("body.2", []))
        measure("no stem", exclude=blocks.get("body.0", []))
        if args.blocks:
            for block, names in blocks.items():
                if block != "products":
                    measure(block.replace("body.", "").replace("blocks.", "b"), nodes=names)
        measure("products only", nodes=blocks["products"])
        convs = [node.name for node in prepared.node if node.op_type == "Conv"]
        measure("convs only", nodes=convs)
        measure("default (convs but the stem's)")
    info = cpu_info()
    print(f"\n{info.model}, {', '.join(info.isa())}; {len(everything)} quantizable nodes")
    print(format_table(rows))


if __name__ == "__main__":
    main()
