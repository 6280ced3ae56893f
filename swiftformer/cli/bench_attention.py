"""``swiftformer bench-attention``: time of each token mixer vs token count, and its fitted exponent.

    swiftformer bench-attention --threads 2 --plot attention_scaling.png --json attention_scaling.json

``swiftformer bench --attention`` is the old spelling of this command.
"""
from __future__ import annotations

import argparse
import json

from .numbers import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", default=None, help="comma-separated token counts (default: 196,784,3136,12544)")
    add_timing_arguments(parser)


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this command shares with ``swiftformer bench``."""
    parser.add_argument("--threads", type=positive_int, default=2, help="intra-op threads of every backend")
    parser.add_argument("--rounds", type=positive_int, default=10, help="interleaved timing rounds")
    parser.add_argument("--iters", type=positive_int, default=3, help="calls per runner and round at batch 1")
    parser.add_argument("--json", default=None, help="write the records here")
    parser.add_argument("--plot", default=None, help="PNG: latency vs top-1, or attention time vs tokens")


def run(args: argparse.Namespace) -> int:
    from .. import bench

    from ..errors import SwiftFormerError

    try:
        tokens = tuple(int(n) for n in args.tokens.split(",")) if args.tokens else bench.ATTENTION_TOKENS
    except ValueError:
        raise SwiftFormerError(f"--tokens {args.tokens}: expected comma-separated integers, e.g. 196,784") from None
    if min(tokens) < 1:
        raise SwiftFormerError(f"--tokens {args.tokens}: a token count is at least 1")
    if len(set(tokens)) < 2:
        raise SwiftFormerError(f"--tokens {args.tokens}: give at least two different token counts to fit an exponent")
    low = sorted(tokens)[min(len(tokens) // 2, len(tokens) - 2)]  # the upper half: where the asymptote shows
    rows = bench.run_attention_benchmark(tokens, threads=args.threads, rounds=args.rounds, iters=args.iters)
    print(f"{'attention':<18}" + "".join(f"{f'N={n}':>12}" for n in tokens) + f"{'exp all':>9}{f'exp {low}+':>10}")
    overall = bench.attention_exponents(rows)
    large = bench.attention_exponents(rows, low=low)
    for name in overall:
        times = [row["median_ms"] for row in rows if row["attention"] == name]
        print(f"{name:<18}" + "".join(f"{t:>10.3f}ms" for t in times) + f"{overall[name]:>9.2f}{large[name]:>10.2f}")
    top = max(tokens)
    at_top = {row["attention"]: row["median_ms"] for row in rows if row["tokens"] == top}
    for name in ("additive", "additive (fused)"):
        print(f"{name} vs mhsa at N={top}: {at_top['mhsa'] / at_top[name]:.1f}x faster")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "exponent_all": overall, f"exponent_{low}_{top}": large,
                       "threads": args.threads}, handle, indent=1)
    if args.plot:
        bench.plot_attention_scaling(rows, args.plot, f"Token mixers at width 64, batch 1, {args.threads} threads")
    return 0
