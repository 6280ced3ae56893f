"""``swiftformer info``: size and cost of each variant, as built here."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..models.attention import ATTENTIONS
    from .numbers import image_side

    parser.add_argument("--model", default=None, help="one variant (default: all)")
    parser.add_argument("--img-size", type=image_side, default=224)
    parser.add_argument("--attention", default="additive", choices=ATTENTIONS, help="token mixer of the SwiftFormer encoders")


def run(args: argparse.Namespace) -> int:
    from ..models import PUBLISHED_TOP1, create_model, list_models, resolve_variant
    from ..profiling import count_macs, count_params

    names = [resolve_variant(args.model)] if args.model else list_models()
    print(f"{'model':<16}{'params':>12}{'GMACs':>8}{'stage widths':>22}  published top-1")
    for name in names:
        model = create_model(name, attention=args.attention)
        widths = "/".join(str(info["num_chs"]) for info in model.feature_info)
        macs = count_macs(model, args.img_size) / 1e9
        print(f"{name:<16}{count_params(model):>12,}{macs:>8.3f}{widths:>22}  {PUBLISHED_TOP1[name]:.1f} %")
    return 0
