"""``swiftformer share``: a run as a folder timm loads (``local-dir:DIR``), with a model card; ``--push`` uploads it."""
from __future__ import annotations

import argparse
import shlex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..share import LICENSE

    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                        help="a run directory (its best.pth, else last.pth), a training checkpoint or a native file")
    parser.add_argument("--output", required=True, metavar="DIR", help="the folder to write (config.json, "
                        "model.safetensors, README.md, recipe.yaml); an existing non-empty one only with --force")
    parser.add_argument("--push", metavar="REPO", default=None,
                        help="then upload it to this Hugging Face Hub model repository (USER/NAME)")
    parser.add_argument("--model", default=None, help="the variant of weights that do not name it (official, timm, "
                        "Hugging Face); runs and our own files name theirs")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--license", default=LICENSE, help=f"the weights' license, for the model card (default {LICENSE})")


def run(args: argparse.Namespace) -> int:
    from ..share import push, share

    command = shlex.join(["swiftformer", "share", args.source, "--output", args.output]
                         + ["--model", args.model] * bool(args.model) + ["--push", args.push] * bool(args.push))
    folder = share(args.source, args.output, repo=args.push, force=args.force, license=args.license, command=command,
                   model_name=args.model)
    print(f"wrote {folder}: timm.create_model('local-dir:{folder}', pretrained=True) loads it")
    if args.push:
        print(f"pushed to {push(folder, args.push)}: timm.create_model('hf-hub:{args.push}', pretrained=True) loads it")
    return 0
