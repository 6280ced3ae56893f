"""Shared sub-commands of ``swiftformer detect`` and ``swiftformer segment``: train, eval, predict."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_task_arguments(parser: argparse.ArgumentParser, task: str, default_config: str) -> None:
    """``train`` / ``eval`` / ``predict`` sub-parsers of one task."""
    from .numbers import probability

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help=f"train a {task} model (torchrun for DDP)")
    train.add_argument("--config", default=default_config, help=f"shipped recipe name or YAML path (default {default_config})")
    train.add_argument("--data", help="dataset root (overrides the recipe's data)")
    train.add_argument("--output", help="run folder: log.jsonl, last.pt")
    train.add_argument("--resume", help="continue from this last.pt")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe key (YAML value), e.g. --set iterations=200 --set epochs=null")
    evaluate = actions.add_parser("eval", help="validation metrics of a trained checkpoint")
    evaluate.add_argument("checkpoint", help="last.pt of a training run")
    evaluate.add_argument("--data", help="dataset root (default: the one it was trained on)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--json", help="also write the metrics to this file")
    predict = actions.add_parser("predict", help="write PNGs of the predictions on images")
    predict.add_argument("checkpoint", help="last.pt of a training run")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--output", default="predictions", help="folder for the PNGs")
    for sub in (train, evaluate, predict):
        sub.set_defaults(parser=sub)  # argparse errors name "swiftformer detect train", not "swiftformer detect"
    if task == "detection":
        predict.add_argument("--score-threshold", type=probability, default=0.5)
    predict.add_argument("--device", default="cpu")


def run_task(args: argparse.Namespace, task: str) -> int:
    from ..checkpoint import check_destination
    from ..dense.config import load_config
    from ..errors import SwiftFormerError
    from ..recipes import parse_set

    overrides = parse_set(args.overrides) if hasattr(args, "overrides") else {}
    if getattr(args, "data", None):
        overrides["data"] = args.data
    if getattr(args, "output", None):  # a read-only folder, or a file where the folder goes, fails before any work
        check_destination(args.output, folder=True)
    if getattr(args, "json", None):
        check_destination(args.json)
    if args.action == "train":
        from ..dense.engine import summary, train

        if args.output:
            overrides["output"] = args.output
        config = load_config(args.config, overrides)
        if config.task != task:
            raise SwiftFormerError(f"{args.config} is a {config.task} recipe, not {task}")
        metrics = train(config, resume=args.resume)
        print(f"final: {summary(metrics)}")
        return 0
    if args.action == "eval":
        from ..dense.engine import evaluate_checkpoint, summary

        metrics = evaluate_checkpoint(args.checkpoint, overrides)
        print(summary(metrics))
        if args.json:
            Path(args.json).write_text(json.dumps(metrics, indent=2))
        return 0
    return _predict(args, task)


def _predict(args: argparse.Namespace, task: str) -> int:
    from ..dense.data import read_image
    from ..dense.engine import load_trained
    from ..dense.predict import detect, draw_detections, draw_segmentation, save_png, segment

    model, config, classes = load_trained(args.checkpoint)
    if config.task != task:
        from ..errors import SwiftFormerError

        raise SwiftFormerError(f"{args.checkpoint} holds a {config.task} model, not {task}")
    model = model.to(args.device)
    for name in args.images:
        image = read_image(Path(name), exif_orientation=True)
        if task == "detection":
            detections = detect(model, image, args.score_threshold)
            picture = draw_detections(image, detections, classes["names"])
            found = f"{len(detections['boxes'])} objects"
        else:
            prediction = segment(model, image, config.img_size)
            # label 0 is background unless ADE20K's reduce_zero_label made it a real class (wall)
            skip = () if config.reduce_zero_label else (0,)
            picture = draw_segmentation(image, prediction, len(classes["names"]), skip)
            found = ", ".join(f"class {c}: {100 * float((prediction == c).float().mean()):.1f} %" for c in prediction.unique().tolist())
        path = save_png(picture, Path(args.output) / f"{Path(name).stem}.png")
        print(f"{path}: {found}")
    return 0
