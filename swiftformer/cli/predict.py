"""``swiftformer predict``: top-k classes with probabilities for image files or folders."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--checkpoint", default=None, help="our last.pth/best.pth, or official/timm/HF weights "
                        "(default: the released ImageNet weights of --model)")
    parser.add_argument("--model", default=None, help="variant, for checkpoints that are not our training runs")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    parser.add_argument("--img-size", type=int, default=None, help="default: the run's, else 224")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")


def run(args: argparse.Namespace) -> int:
    from ..data import batch_images, eval_transform, list_images
    from ..distributed import resolve_device
    from ..inference import load_model, predict, run_config

    loaded = load_model(args.checkpoint, args.model, ema=args.ema)
    device = resolve_device(args.device)
    loaded.model.to(device)
    transform = eval_transform(loaded.model, run_config(loaded, {"img_size": args.img_size}))
    paths = list_images(args.inputs)
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        probabilities, indices = predict(loaded.model, batch_images(chunk, transform).to(device), args.topk)
        for path, probs, classes in zip(chunk, probabilities.tolist(), indices.tolist()):
            top = [(loaded.class_names[c], p) for c, p in zip(classes, probs)]
            if args.json:
                print(json.dumps({"image": str(path), "top": [{"class": n, "probability": p} for n, p in top]}))
            else:
                print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    return 0
