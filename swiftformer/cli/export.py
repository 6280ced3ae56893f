"""``swiftformer export``: the fused model as ONNX, OpenVINO IR, Core ML, TorchScript or ExecuTorch, checked against
PyTorch.

    swiftformer export --model swiftformer_s --checkpoint s.safetensors --format onnx --out s.onnx
    swiftformer export --model swiftformer_xs --format executorch --out xs.pte --dynamic-batch
"""
from __future__ import annotations

import argparse
import logging

# Converters that log every graph rewrite at INFO; the CLI runs with INFO logging.
CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "openvino", "coremltools", "executorch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import FORMATS, MAX_DYNAMIC_BATCH
    from ..models.attention import ATTENTIONS
    from .numbers import image_side, positive_float, positive_int

    parser.add_argument("--model", required=True, help="variant, e.g. swiftformer_s")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", default=None, help="weights: our last.pth/best.pth, official, timm, Hugging "
                         "Face or native (default: the released ImageNet weights of --model)")
    weights.add_argument("--random-weights", action="store_true",
                         help="export an untrained model (to try a toolchain; it classifies nothing)")
    parser.add_argument("--attention", default="additive", choices=ATTENTIONS, help="token mixer the checkpoint was trained with")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="output file (.onnx, .xml for OpenVINO IR with its .bin beside it, .mlpackage, .pt, .pte)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=positive_int, default=1, help="fixed batch size of the artefact (default 1)")
    batch.add_argument(
        "--dynamic-batch", action="store_true", help=f"any batch size from 1 to {MAX_DYNAMIC_BATCH}"
    )
    parser.add_argument("--img-size", type=image_side, nargs=2, default=None, metavar=("H", "W"),
                        help="default: the run's size for our training checkpoints, else 224 224")
    parser.add_argument("--atol", type=positive_float, default=1e-4, help="largest accepted max abs difference of the logits")


def run(args: argparse.Namespace) -> int:
    from ..export import MAX_DYNAMIC_BATCH, check_output, export_model
    from ..inference import load_model
    from ..pretrained import create_model

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    check_output(args.format, args.out)  # before any weights are fetched or converted
    run_size = None
    if args.random_weights:
        model = create_model(args.model, attention=args.attention)
        weights = "RANDOM weights (--random-weights): the artefact runs, but classifies nothing"
    else:
        loaded = load_model(args.checkpoint, args.model, attention=args.attention)
        model = loaded.model
        run_size = (loaded.run_config or {}).get("img_size")
        weights = f"weights {args.checkpoint}" if args.checkpoint else "the released ImageNet weights"
    img_size = tuple(args.img_size) if args.img_size else (run_size or 224,) * 2
    result = export_model(
        model, args.format, args.out, batch=args.batch, dynamic_batch=args.dynamic_batch,
        img_size=img_size, atol=args.atol,
    )
    batch = f"batch 1..{MAX_DYNAMIC_BATCH}" if result.dynamic_batch else f"batch {result.input_shape[0]}"
    print(f"wrote {result.path} ({args.format}, fused {model.variant}, {batch}, input {list(result.input_shape[1:])}"
          f"{' as trained' if run_size and not args.img_size else ''}), {weights}")
    if result.max_abs_diff is None:
        print(f"check: {result.note}")
    else:
        verdict = "OK, but of random weights" if args.random_weights else "OK"
        print(f"check: max abs diff vs PyTorch = {result.max_abs_diff:.3g} (tolerance {args.atol:g}) - {verdict}")
    return 0
