"""``swiftformer predict``: top-k classes with probabilities for image files or folders."""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .model_options import add_weights_arguments
    from .numbers import image_side, positive_int

    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    add_weights_arguments(parser)
    parser.add_argument("--img-size", type=image_side, default=None, help="default: the run's, else 224")
    parser.add_argument("--topk", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave unreadable images out (each logged, then counted) instead of stopping")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")


def run(args: argparse.Namespace) -> int:
    from ..artefacts import ArtefactModel
    from ..data import batch_images, eval_transform, list_images
    from ..distributed import resolve_device
    from ..inference import load_model, predict, run_config

    loaded = load_model(args.checkpoint, args.model, ema=args.ema, attention=args.attention)
    device = resolve_device(args.device)
    loaded.model.to(device)
    transform = eval_transform(loaded.model, run_config(loaded, {"img_size": args.img_size}),
                               own_size=isinstance(loaded.model, ArtefactModel))  # an artefact runs one size
    paths = list_images(args.inputs)
    skipped = 0
    for start in range(0, len(paths), args.batch_size):
        images, chunk = batch_images(paths[start : start + args.batch_size], transform, args.skip_bad_images)
        skipped += min(args.batch_size, len(paths) - start) - len(chunk)
        if images is None:
            continue
        probabilities, indices = predict(loaded.model, images.to(device), args.topk)
        for path, probs, classes in zip(chunk, probabilities.tolist(), indices.tolist()):
            top = [(loaded.class_names[c], p) for c, p in zip(classes, probs)]
            if args.json:
                print(json.dumps({"image": str(path), "top": [{"class": n, "probability": p} for n, p in top]}))
            else:
                print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    if skipped == len(paths):
        from ..errors import DataError

        raise DataError(f"none of the {len(paths)} image(s) could be read")
    if skipped:
        print(f"skipped {skipped} unreadable image(s) of {len(paths)}", file=sys.stderr)
    return 0
