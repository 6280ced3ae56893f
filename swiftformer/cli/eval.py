"""``swiftformer eval``: top-1/top-5 and per-class accuracy of a checkpoint on a validation set.

Works under ``torchrun`` too: each rank evaluates its shard and the counts are summed exactly.
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .model_options import add_weights_arguments
    from .numbers import image_side, positive_int, workers

    add_weights_arguments(parser)
    parser.add_argument("--dataset", choices=("folder", "digits", "cifar10"), default=None, help="default: the run's")
    parser.add_argument("--data", default=None,
                        help="dataset folder (DIR/val is used), the folder of class folders itself, or CIFAR-10 root")
    parser.add_argument("--download", action="store_true", default=None, help="fetch CIFAR-10 through torchvision")
    parser.add_argument("--skip-bad-images", action="store_true", default=None,
                        help="leave unreadable images out (logged and counted) instead of stopping")
    parser.add_argument("--img-size", type=image_side, default=None, help="default: the run's, else 224")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--workers", type=workers, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from ..artefacts import ArtefactModel
    from ..data import Relabelled, build_dataset, eval_loader
    from ..distributed import cleanup, init_distributed
    from ..engine import evaluate, memory_format
    from ..inference import load_model, run_config
    from ..labels import model_class_indices

    dist_info = init_distributed(args.device)
    try:
        loaded = load_model(args.checkpoint, args.model, ema=args.ema, attention=args.attention)
        if args.amp != "none" and isinstance(loaded.model, ArtefactModel):
            from ..errors import SwiftFormerError

            raise SwiftFormerError(f"--amp {args.amp} casts a PyTorch model; {args.checkpoint} is an artefact that "
                                   f"runs in the precision it was exported in ({loaded.model.info.precision}): "
                                   "leave --amp unset")
        config = run_config(loaded, {"dataset": args.dataset, "data": args.data, "download": args.download,
                                     "img_size": args.img_size, "batch_size": args.batch_size, "workers": args.workers,
                                     "skip_bad_images": args.skip_bad_images})
        is_artefact = isinstance(loaded.model, ArtefactModel)  # runs the one size it was exported at
        dataset, data_names = build_dataset(loaded.model, config, "val", own_size=is_artefact)
        data_source = config.data or config.dataset
        if loaded.run_config is not None:  # our runs know their class names: the data's are matched to them
            indices = model_class_indices(loaded.class_names, data_names, args.checkpoint, data_source)
            if indices != list(range(loaded.model.num_classes)):
                dataset = Relabelled(dataset, indices)
        elif len(data_names) == loaded.model.num_classes:  # other checkpoints know only their count
            indices = list(range(len(data_names)))
        else:
            from ..errors import DataError

            raise DataError(f"the data has {len(data_names)} class{'es' * (len(data_names) != 1)}, the model "
                            f"predicts {loaded.model.num_classes}")
        loader = eval_loader(dataset, config.batch_size, config.workers, dist_info, config.skip_bad_images)
        model = loaded.model.to(dist_info.device, memory_format=memory_format(channels_last=True))
        result = evaluate(model, loader, dist_info.device, model.num_classes, amp=args.amp, channels_last=True)
    finally:
        cleanup()
    if not dist_info.is_main:
        return 0
    names = loaded.class_names if loaded.run_config is not None else data_names
    what = loaded.model.variant  # an artefact's says its format and precision, e.g. "swiftformer_xs (onnx int8)"
    if args.json:
        print(json.dumps({**result.to_dict(), "model": what, "class_names": names}))
        return 0
    shown = sorted(indices)  # the data's classes, in the model's order
    print(f"model: {what}" + (f" from {args.checkpoint}" if args.checkpoint else ", the released weights")
          + (" (its EMA weights)" if args.ema else ""))
    print(per_class_table([names[i] for i in shown], [result.class_correct[i] for i in shown],
                          [result.class_total[i] for i in shown]))
    print(f"images: {result.count}")
    if len(indices) < model.num_classes:
        print(f"note: {data_source} holds {len(indices)} of the model's {model.num_classes} classes; "
              f"top-1 and top-5 pick among all {model.num_classes}")
    print(f"top-1: {result.top1:.2f}  top-5: {result.top5:.2f}")
    return 0


def per_class_table(names: list[str], correct: list[int], total: list[int]) -> str:
    """One row per class: name, images, top-1 %."""
    width = max(len("class"), *(len(n) for n in names))
    rows = [f"{'class':<{width}}  {'images':>6}  {'top-1':>6}"]
    for name, hits, count in zip(names, correct, total):
        accuracy = f"{100.0 * hits / count:6.2f}" if count else f"{'-':>6}"
        rows.append(f"{name:<{width}}  {count:>6}  {accuracy}")
    return "\n".join(rows)
