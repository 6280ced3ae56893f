"""``swiftformer export``: the fused model as ONNX, OpenVINO IR, Core ML, TorchScript, ExecuTorch or LiteRT, checked
against PyTorch; in fp32, or fp16/bf16/int8 checked on held-out real images.

    swiftformer export --model swiftformer_s --checkpoint s.safetensors --format onnx --out s.onnx
    swiftformer export --model swiftformer_xs --format executorch --out xs.pte --dynamic-batch
    swiftformer export --model swiftformer_xs --checkpoint runs/cifar10_mini/best.pth --format openvino \\
        --precision int8 --calibration ../shared/data/cifar10-mini/train --out xs-int8.xml
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SwiftFormerError

if TYPE_CHECKING:
    from torch import nn

    from ..agreement import Agreement
    from ..calibration import ImageBatch
    from ..export import ExportResult

# Fewer check images than this get a note: a percentage over them is too coarse to stand behind.
FEW_CHECK_IMAGES = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..calibration import DEFAULT_CALIBRATION_SIZE, DEFAULT_CHECK_SIZE
    from ..deploy.graph import MAX_DYNAMIC_BATCH
    from ..formats import FORMATS, IOS, PRECISIONS
    from ..models.attention import ATTENTIONS
    from .numbers import image_side, positive_float, positive_int, probability

    parser.add_argument("--model", default=None, help="variant, e.g. swiftformer_s (a training run of ours says its own)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", default=None, help="weights: our last.pth/best.pth, official, timm, Hugging "
                         "Face or native (default: the released ImageNet weights of --model)")
    weights.add_argument("--random-weights", action="store_true",
                         help="export an untrained model (to try a toolchain; it classifies nothing)")
    parser.add_argument("--attention", default="additive", choices=ATTENTIONS, help="token mixer the checkpoint was trained with")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS))
    parser.add_argument("--out", required=True, help="output file (.onnx, .xml for OpenVINO IR with its .bin beside it, "
                        ".mlpackage, .pt, .pte, .tflite)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=positive_int, default=1, help="fixed batch size of the artefact (default 1)")
    batch.add_argument(
        "--dynamic-batch", action="store_true", help=f"any batch size from 1 to {MAX_DYNAMIC_BATCH}"
    )
    parser.add_argument("--img-size", type=image_side, nargs="+", default=None, metavar="N | H W",
                        help="N (square) or H W; default: the run's size for our training checkpoints, else 224")
    parser.add_argument("--atol", type=positive_float, default=1e-4, help="largest accepted max abs difference of the logits (fp32)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--calibration", default=None, help="folder of real images (ImageFolder or flat) to calibrate int8 on")
    parser.add_argument("--calibration-size", type=positive_int, default=DEFAULT_CALIBRATION_SIZE,
                        help=f"calibration images, a seeded draw (default {DEFAULT_CALIBRATION_SIZE})")
    parser.add_argument("--check-data", default=None,
                        help="folder of real images to check the artefact on (default: the rest of --calibration)")
    parser.add_argument("--check-size", type=positive_int, default=DEFAULT_CHECK_SIZE,
                        help=f"at most this many check images (default {DEFAULT_CHECK_SIZE})")
    parser.add_argument("--min-agreement", type=probability, default=None,
                        help="least top-1 agreement with fp32 PyTorch, 0..1 (default 0.995 fp16/bf16, 0.98 int8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration/check draw")
    defaults = ", ".join(f"{name} {fmt.default_io}" for name, fmt in FORMATS.items())
    parser.add_argument("--io", choices=IOS, default=None,
                        help="image: RGB pixels in as the platform delivers them, normalisation and softmax inside, "
                        "labels and metadata in the artefact (an app loads it unchanged); tensor: normalised tensor "
                        f"in, logits out (default per format: {defaults})")
    parser.add_argument("--author", default="", help="author field of the image form's metadata")
    parser.add_argument("--license", default="", help="license field of the image form's metadata")
    parser.add_argument("--description", default="", help="description of the image form (default: what it takes "
                        "and gives, and its top-1)")


def image_hw(sides: list[int]) -> tuple[int, int]:
    """``--img-size N`` (square) or ``H W``."""
    if len(sides) > 2:
        raise SwiftFormerError(f"--img-size {' '.join(map(str, sides))}: give N (square) or H W")
    return (sides[0], sides[-1])


def _calibrates(args: argparse.Namespace) -> bool:
    from ..formats import CALIBRATED

    return (args.format, args.precision) in CALIBRATED


def _images(args: argparse.Namespace, transform: Callable) -> tuple[ImageBatch | None, ImageBatch | None]:
    """(calibration, check) image batches from the folders given, or ``None`` where none were given. A precision
    that calibrates nothing checks on the whole of ``--calibration`` when no ``--check-data`` is given."""
    from ..calibration import calibration_and_check, check_images, load_batch

    check_folder = args.check_data or args.calibration
    if args.calibration and _calibrates(args):
        chosen, held_out = calibration_and_check(args.calibration, args.calibration_size, args.check_data,
                                                 args.check_size, args.seed)
        print(f"calibration: {chosen.describe(args.calibration)}")
        print(f"check: {held_out.describe(check_folder)}")
        return load_batch(chosen, transform), load_batch(held_out, transform)
    if check_folder:
        held_out = check_images(check_folder, args.check_size, args.seed)
        print(f"check: {held_out.describe(check_folder)}")
        return None, load_batch(held_out, transform)
    return None, None


def check_source(args: argparse.Namespace) -> str:
    """What the check images are, for the verdict line."""
    if args.check_data:
        return "the images of --check-data"
    return "images of --calibration not used to calibrate" if _calibrates(args) else "the images of --calibration"


def training_images_warning(folder: str, run: dict) -> str:
    """A warning when ``folder`` holds the training images of the run being exported: agreement and top-1 on photos
    the model was fitted to are no guide to the photos it will see."""
    if run.get("dataset", "folder") != "folder" or not run.get("data"):
        return ""
    train = (Path(run["data"]) / "train").resolve()
    checked = Path(folder).resolve()
    if checked != train and train not in checked.parents:
        return ""
    return (f"the check images ({folder}) are this run's training images: agreement and top-1 on photos the model "
            f"was trained on flatter it; give --check-data with photos it has not seen (e.g. {Path(run['data']) / 'val'})")


def report_agreement(label: str, agreement: Agreement, check_names: list[str] | None, class_names: list[str]) -> None:
    """The check table and what qualifies it; printed whether the artefact passed or not."""
    from ..agreement import format_table, unlabelled_reason

    print(format_table({label: agreement}))
    if agreement.reference_top1 is None:
        print(f"note: no top-1 (-) because {unlabelled_reason(check_names, class_names)}")
    if agreement.images < FEW_CHECK_IMAGES:
        print(f"note: only {agreement.images} check images, so one disagreement is {100 / agreement.images:.1f} % of "
              f"them: give {FEW_CHECK_IMAGES} or more (--check-data DIR) for the agreement bound to mean much")


def run(args: argparse.Namespace) -> int:
    from ..export import DisagreementError, export_model
    from . import quiet_converters

    quiet_converters(args.verbose, uses_nncf=args.format == "openvino" and args.precision == "int8")
    requested = check_arguments(args)  # before any weights are fetched or converted
    model, class_names, run_config, weights = load_weights(args)
    img_size = image_size(requested, run_config)
    calibration, check = real_images(args, model, img_size, class_names, run_config)
    try:
        result = export_model(
            model, args.format, args.out, batch=args.batch, dynamic_batch=args.dynamic_batch,
            img_size=img_size, atol=args.atol, precision=args.precision, calibration=calibration, check=check,
            min_agreement=args.min_agreement, class_names=class_names, crop_pct=run_config.get("crop_pct"),
            interpolation=run_config.get("interpolation"), io=args.io, author=args.author, license=args.license,
            description=args.description, top1=run_top1(args.checkpoint) if args.io == "image" else None,
            random_weights=args.random_weights,
        )
    except DisagreementError as error:
        report_agreement(f"{args.format} {args.precision}", error.agreement, check.class_names, class_names)
        raise
    report(args, result, model, weights, bool(run_config.get("img_size")), check, class_names, run_config)
    return 0


def check_arguments(args: argparse.Namespace) -> tuple[int, int] | None:
    """A one-line error for options that cannot work together, before anything is loaded; the ``--img-size`` asked."""
    from ..artefacts import is_artefact
    from ..export import check_output, check_request
    from ..formats import FORMATS

    args.io = args.io or FORMATS[args.format].default_io
    check_request(args.format, args.precision, bool(args.calibration), bool(args.calibration or args.check_data),
                  args.dynamic_batch, args.io)
    if args.io == "tensor" and (args.author or args.license or args.description):
        raise SwiftFormerError("--author, --license and --description go into the image form's metadata: "
                               "drop them or use --io image")
    check_output(args.format, args.out)
    requested = image_hw(args.img_size) if args.img_size else None
    if not args.model and not args.checkpoint:
        source = "--random-weights" if args.random_weights else "the released weights"
        raise SwiftFormerError(f"--model: which variant to export with {source} (e.g. --model swiftformer_xs)")
    if args.checkpoint and is_artefact(args.checkpoint):
        raise SwiftFormerError(f"{args.checkpoint} is an exported artefact: export from the checkpoint it was made from")
    return requested


def load_weights(args: argparse.Namespace) -> tuple[nn.Module, list[str], dict, str]:
    """The model, its class names, its training run's config (``{}`` for other weights) and what its weights are."""
    from ..inference import load_model
    from ..labels import default_class_names
    from ..pretrained import create_model

    if args.random_weights:
        model = create_model(args.model, attention=args.attention)
        return (model, default_class_names(model.num_classes), {},
                "RANDOM weights (--random-weights): the artefact runs, but classifies nothing")
    loaded = load_model(args.checkpoint, args.model, attention=args.attention)
    weights = f"weights {args.checkpoint}" if args.checkpoint else "the released ImageNet weights"
    return loaded.model, loaded.class_names, loaded.run_config or {}, weights


def run_top1(checkpoint: str | None) -> float | None:
    """The val top-1 (%) of a checkpoint of our training runs, from the run's ``log.jsonl`` beside it: the best
    epoch's for ``best.pth``, the last one's otherwise; ``None`` where unknown."""
    from ..runlog import read_log

    if not checkpoint or not (log := Path(checkpoint).with_name("log.jsonl")).is_file():
        return None
    scores = [record["val_top1"] for record in read_log(log) if isinstance(record.get("val_top1"), (int, float))]
    if not scores:
        return None
    return float(max(scores) if Path(checkpoint).name == "best.pth" else scores[-1])


def image_size(requested: tuple[int, int] | None, run_config: dict) -> tuple[int, int]:
    """``--img-size``, else the run's size, else 224; a note where it is not the size the run was trained at."""
    run_size = run_config.get("img_size")
    if run_size and requested and requested != (run_size, run_size):
        print(f"note: the run was trained at {run_size} px and this artefact takes {requested[0]}x{requested[1]}: "
              "its accuracy is the model's at that size, which the check (PyTorch at the same size) cannot show")
    return requested or (run_size or 224,) * 2


def real_images(args: argparse.Namespace, model: nn.Module, img_size: tuple[int, int], class_names: list[str],
                run_config: dict) -> tuple[ImageBatch | None, ImageBatch | None]:
    """The (calibration, check) images through the artefact's own transform, with a note on what is not used."""
    from ..artefacts import artefact_info
    from ..formats import FORMATS

    runs_here = FORMATS[args.format].runs_here  # no check runs a Core ML package (they predict on macOS only)
    if (args.calibration or args.check_data) and not runs_here:
        print(f"note: --format {args.format} --precision {args.precision} uses no image: it calibrates nothing, and "
              "no image check runs Core ML packages (they predict on macOS only)")
    elif args.calibration and not _calibrates(args):
        use = ("--calibration is not used (--check-data is)" if args.check_data
               else "every image of --calibration is a check image")
        print(f"note: --format {args.format} --precision {args.precision} calibrates nothing: {use}")
    if not (args.calibration or args.check_data) or not runs_here:
        return None, None
    transform = artefact_info(model, args.format, args.precision, img_size, 1, 1, class_names,
                              run_config.get("crop_pct"), run_config.get("interpolation")).transform()
    return _images(args, transform)


def report(args: argparse.Namespace, result: ExportResult, model: nn.Module, weights: str, run_sized: bool,
           check: ImageBatch | None, class_names: list[str], run_config: dict) -> None:
    """What was written, how it matched PyTorch, and what qualifies it."""
    from ..agreement import top1_loss_warning
    from ..deploy.graph import MAX_DYNAMIC_BATCH

    batch = f"batch 1..{result.max_batch}" if result.dynamic_batch else f"batch {result.input_shape[0]}"
    print(f"wrote {result.path} ({args.format} {result.precision} {result.io} form, fused {model.variant}, {batch}, "
          f"input {list(result.input_shape[1:])}{' as trained' if run_sized and not args.img_size else ''}), {weights}")
    if meta := result.metadata:
        top1 = f", top-1 {meta.top1:.2f} %" if meta.top1 is not None else ""
        print(f"inside: {len(meta.labels)} labels, RGB {meta.input_size[0]}x{meta.input_size[1]} {meta.layout} pixels "
              f"0..{meta.pixel_max:g} in, probabilities out{top1}, author {meta.author or '-'}, license "
              f"{meta.license or '-'}")
    verdict = "OK, but of random weights" if args.random_weights else "OK"
    if result.max_abs_diff is not None:
        what = "probabilities" if result.io == "image" else "logits"
        print(f"check: max abs diff vs PyTorch = {result.max_abs_diff:.3g} ({what}, tolerance {args.atol:g}) - "
              f"{verdict}")
    if result.agreement is not None:
        report_agreement(f"{args.format} {args.precision}", result.agreement, check.class_names, class_names)
        print(f"check: agreement with fp32 PyTorch on {check_source(args)} - {verdict}")
        if warning := training_images_warning(args.check_data or args.calibration, run_config):
            print(f"warning: {warning}")
        if warning := top1_loss_warning(result.agreement):
            remedy = ("; if it holds there, more calibration images (--calibration-size 1024) or train --qat may "
                      "recover it"
                      if args.precision == "int8" else "")
            print(f"warning: {warning}{remedy}")
    elif result.max_abs_diff is None:
        print(f"check: {result.note}")
    if result.dynamic_batch and result.max_batch < MAX_DYNAMIC_BATCH:
        print(f"note: ExecuTorch's lowering narrowed the batch to 1..{result.max_batch} (torch.export guards the batch "
              f"on a convolution's backend choice); eval and predict feed it at most {result.max_batch} images at a time")
    if result.run_as_checked:
        print(f"note: {result.run_as_checked}")
