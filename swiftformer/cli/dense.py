"""Shared sub-commands of ``swiftformer detect`` and ``swiftformer segment``: train, eval, predict, export.

The vocabulary is the classification commands': ``--checkpoint`` (the run checkpoint to read),
``--output-dir``, ``--config``, ``--set KEY=VALUE``, ``--data``, ``--batch-size``, ``--workers``, ``--device``.
Older spellings stay as aliases: a positional checkpoint before the images, and ``--output``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# flag -> DenseConfig field, for the flags that override the recipe (train) or the stored config (eval)
CONFIG_FLAGS = {"data": "data", "batch_size": "batch_size", "workers": "workers", "device": "device"}


def _config_flags(parser: argparse.ArgumentParser, data_help: str) -> None:
    from .numbers import positive_int, workers

    parser.add_argument("--data", help=data_help)
    parser.add_argument("--batch-size", type=positive_int, help="per process (default: the recipe's)")
    parser.add_argument("--workers", type=workers, help="data-loading processes per process (default: the recipe's)")
    parser.add_argument("--device", help="auto, cpu, cuda (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (YAML value), e.g. --set iterations=200 --set epochs=null")


def _checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="last.pth or best.pth of a training run")


def add_task_arguments(parser: argparse.ArgumentParser, task: str, default_config: str) -> None:
    """``train`` / ``eval`` / ``predict`` sub-parsers of one task."""
    from .numbers import positive_int, probability

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help=f"train a {task} model (torchrun for DDP)")
    train.add_argument("--config", default=default_config, help=f"shipped recipe name or YAML path (default {default_config})")
    _config_flags(train, "dataset root (overrides the recipe's data)")
    train.add_argument("--output-dir", "--output", dest="output_dir",
                       help="run directory: config.yaml, log.jsonl, last.pth, best.pth (--output: the old spelling)")
    train.add_argument("--resume", metavar="CKPT", help="continue a run from its last.pth")
    evaluate = actions.add_parser("eval", help="validation metrics of a trained checkpoint")
    _checkpoint_flag(evaluate)
    evaluate.add_argument("legacy_checkpoint", nargs="?", help=argparse.SUPPRESS)  # the old positional spelling
    _config_flags(evaluate, "dataset root (default: the one it was trained on)")
    evaluate.add_argument("--json", help="also write the metrics to this file")
    predict = actions.add_parser("predict", help="write PNGs of the predictions on images")
    _checkpoint_flag(predict)
    predict.add_argument("images", nargs="+",
                         help="image files and/or folders, searched recursively (the old spelling: CHECKPOINT IMAGE...)")
    predict.add_argument("--output-dir", "--output", dest="output_dir", default="predictions",
                         help=f"folder for the pictures, each named IMAGE.{task}.png, a found image's subfolders kept "
                              "(--output: the old spelling)")
    predict.add_argument("--force", action="store_true", help="replace pictures an earlier predict wrote there")
    export = actions.add_parser("export", help="write the trained model for a runtime (image in), checked against "
                                               "PyTorch on the run's validation images")
    _checkpoint_flag(export)
    export.add_argument("--format", required=True,
                        help="onnx, openvino, litert, coreml" if task == "segmentation" else "onnx, openvino")
    export.add_argument("--out", required=True, help="the artefact's file (.onnx, .xml, .tflite, .mlpackage)")
    export.add_argument("--img-size", type=positive_int, nargs="+", metavar="SIZE",
                        help="input height [width] of the artefact (default: the run's img_size / min_size, square)")
    export.add_argument("--data", help="dataset root of the check's validation images (default: the run's)")
    export.add_argument("--check-images", type=positive_int, default=50, metavar="N",
                        help="check on the first N of them (default 50: a whole val split takes long on a CPU)")
    for sub in (train, evaluate, predict, export):
        sub.set_defaults(parser=sub)  # argparse errors name "swiftformer detect train", not "swiftformer detect"
    if task == "detection":
        predict.add_argument("--score-threshold", type=probability, default=0.5)
    predict.add_argument("--device", default="cpu")


def checkpoint_path(args: argparse.Namespace) -> str:
    """``--checkpoint``, or the old positional spelling (eval: ``CHECKPOINT``; predict: ``CHECKPOINT IMAGE...``)."""
    from ..errors import SwiftFormerError

    legacy = getattr(args, "legacy_checkpoint", None)
    if args.action == "predict" and args.checkpoint is None and len(args.images) > 1:
        legacy, args.images = args.images[0], args.images[1:]
    if args.checkpoint and legacy:
        raise SwiftFormerError(f"two checkpoints given ({args.checkpoint} and {legacy}): pass one, with --checkpoint")
    if not (args.checkpoint or legacy):
        raise SwiftFormerError(f"{args.action} needs --checkpoint PATH (a last.pth or best.pth of a training run)")
    return args.checkpoint or legacy


def run_task(args: argparse.Namespace, task: str) -> int:
    from ..checkpoint import check_destination
    from ..dense.config import load_config
    from ..errors import SwiftFormerError
    from ..recipes import parse_set

    # a read-only folder, or a file where the folder goes, fails before any work (train: when it takes the folder)
    if getattr(args, "output_dir", None) and args.action != "train":
        check_destination(args.output_dir, folder=True)
    if getattr(args, "json", None):
        check_destination(args.json)
    if args.action == "predict":
        return _predict(args, task)
    if args.action == "export":
        return _export(args, task)
    overrides = {field: getattr(args, flag) for flag, field in CONFIG_FLAGS.items() if getattr(args, flag) is not None}
    overrides.update(parse_set(args.overrides))
    if args.action == "train":
        from ..dense.engine import summary, train
        from ..rundir import RunInterrupted

        if args.output_dir:
            overrides["output_dir"] = args.output_dir
        config = load_config(args.config, overrides)
        if config.task != task:
            raise SwiftFormerError(f"{args.config} is a {config.task} recipe, not {task}")
        try:
            metrics = train(config, resume=args.resume)
        except RunInterrupted as interrupted:
            print(f"swiftformer {args.command}: {interrupted}", file=sys.stderr)
            return 130
        print(f"final: {summary(metrics)}")
        return 0
    from ..dense.engine import evaluate_checkpoint, summary

    metrics = evaluate_checkpoint(checkpoint_path(args), overrides)
    print(summary(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def _predict(args: argparse.Namespace, task: str) -> int:
    from ..data import find_images
    from ..dense.artefacts import DenseArtefact, artefact_format
    from ..dense.data import read_image
    from ..dense.engine import load_trained
    from ..dense.predict import detect, draw_detections, draw_segmentation, output_paths, save_png, segment
    from ..errors import SwiftFormerError

    checkpoint = checkpoint_path(args)
    suffix = f".{task}.png"
    # pictures an earlier predict left in a folder given as input are not images to predict on
    named = {Path(item) for item in args.images}
    images = [(path, name) for path, name in find_images(args.images) if not path.name.endswith(suffix) or path in named]
    if not images:
        raise SwiftFormerError(f"no images found in {', '.join(args.images)} (only *{suffix} pictures of a predict)")
    pictures = output_paths(images, args.output_dir, suffix)
    existing = [picture for picture in pictures if picture.exists()]
    if existing and not args.force:
        raise SwiftFormerError(f"{existing[0]} exists" + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
                               + ": --force replaces them, or give another --output-dir")
    artefact = DenseArtefact(checkpoint, task) if artefact_format(checkpoint) else None  # an exported model
    if artefact is not None:
        class_names = names = artefact.meta.class_names
        skip = artefact.meta.background
    else:
        model, config, class_names = load_trained(checkpoint)
        if config.task != task:
            raise SwiftFormerError(f"{checkpoint} holds a {config.task} model, not {task}")
        from ..distributed import resolve_device

        model = model.to(resolve_device(args.device))
        names = list(config.class_names or (f"class {c}" for c in range(len(class_names))))
        # label 0 is background unless ADE20K's reduce_zero_label made it a real class (wall)
        skip = () if config.reduce_zero_label else (0,)
    for (path, _), picture_path in zip(images, pictures):
        image = read_image(path, exif_orientation=True)
        if task == "detection":
            detections = (artefact.detect(image, args.score_threshold) if artefact
                          else detect(model, image, args.score_threshold))
            picture = draw_detections(image, detections, class_names)
            found = f"{len(detections['boxes'])} objects"
        else:
            prediction = artefact.segment(image) if artefact else segment(model, image, config.img_size)
            picture = draw_segmentation(image, prediction, len(class_names), skip)
            found = ", ".join(f"{names[c]} {100 * float((prediction == c).float().mean()):.1f} %"
                              for c in prediction.unique().tolist())
        print(f"{save_png(picture, picture_path)}: {found}")
    return 0


def _export(args: argparse.Namespace, task: str) -> int:
    from ..dense.export import export_dense
    from ..errors import SwiftFormerError

    if args.checkpoint is None:
        raise SwiftFormerError("export needs --checkpoint PATH (a last.pth or best.pth of a training run)")
    if args.img_size is not None and len(args.img_size) > 2:
        raise SwiftFormerError(f"--img-size takes a size or a height and a width, not {len(args.img_size)} numbers")
    size = None if args.img_size is None else (args.img_size[0], args.img_size[-1])
    result = export_dense(args.checkpoint, args.format, args.out, task, size, args.data, args.check_images)
    meta = result.metadata
    print(f"{result.path}: {args.format}, {meta.layout} RGB {meta.input_size[0]}x{meta.input_size[1]} in, "
          f"{', '.join(meta.outputs)} out; classes {', '.join(meta.class_names)}")
    if task == "segmentation" and meta.check:
        print(f"checked on {meta.check['images']} validation images: mIoU {meta.check['mIoU']:.2f} "
              f"(PyTorch {meta.check['mIoU_pytorch']:.2f}), {100 * meta.check['pixel_agreement']:.2f} % of the "
              "pixels agree")
    elif meta.check:
        print(f"checked on {meta.check['images']} validation images: {meta.check['matched']} detections matched, "
              f"box IoU >= {meta.check['box_iou']:.3f}, mask IoU >= {meta.check['mask_iou']:.3f}, scores within "
              f"{meta.check['score_diff']:.3g}")
    if result.note:
        print(f"not run: {result.note}")
    return 0
