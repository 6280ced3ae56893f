"""The fused MLPs of a SwiftFormer stage through every matrix kernel eager PyTorch can call, and through ONNX Runtime.

    .venv/bin/python benchmarks/bench_gemm.py --threads 2 --rounds 7

Each workload is a chain of distinct MLP blocks, ``h = h + fc2(gelu(fc1(h)))`` (bias, exact GELU, residual), with
the token count, width and depth of one SwiftFormer-L3 stage at batch 1 — what the fused model runs there. The
blocks have their own weights, so, as in the model, every weight matrix comes from memory rather than from a warm
cache. It is how the fused model's MLP kernel was chosen, and how far eager PyTorch's kernels are from ONNX
Runtime's MLAS on the same chain.

Kernels (all fp32, same weights; each chain's output is checked against the first):

- ``ours``: :meth:`swiftformer.models.fused.FusedBlock.add_mlp`, the code the fused model runs: oneDNN 1x1
  convolutions on the channels-last map, weights pre-packed, GELU and the residual add fused, for MLPs of at
  least ``onednn.MIN_MLP_WEIGHTS`` weights per matrix (L3 stages 3-4); MKL GEMMs below (stages 1-2);
- ``mkl addmm``: ``F.linear`` + GELU + a residual-accumulating ``addmm`` per block (MKL, weights packed per call;
  the fused model's path with ``swiftformer.models.onednn.ENABLED = False``);
- ``mkl packed``: ``torch.ops.mkl._mkl_linear`` with weights packed once (what Inductor's freezing uses);
- ``onednn linear``: ``torch.ops.mkldnn._linear_pointwise`` with pre-packed weights, GELU and the residual add fused;
- ``onnxruntime``: the same chain as an ONNX graph (1x1 ``Conv``, ``Gelu``, ``Add``), ONNX Runtime's CPU provider
  (MLAS, blocked NCHWc layout), skipped when onnxruntime is not installed (``[export]`` extra).

The table gives the median over interleaved rounds (each round: the median of ``--iters`` calls per kernel) and
the GEMM rate in GFLOP/s (2 x multiply-adds of both GEMMs, divided by the chain's whole time).
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench_fused import time_call  # this folder's latency benchmark (the script's folder is on sys.path)

from swiftformer.allocator import describe_allocator, tune_malloc
from swiftformer.models.fused import FusedBlock

# (label, tokens per side, channels, blocks): SwiftFormer-L3's stages at 224x224, batch 1
STAGES = {"L3 stage 1": (56, 64, 4), "L3 stage 2": (28, 128, 4), "L3 stage 3": (14, 320, 12), "L3 stage 4": (7, 512, 6)}
MLP_RATIO = 4


def mlp_blocks(channels: int, depth: int, seed: int = 0) -> list[tuple[nn.Linear, nn.Linear]]:
    """``depth`` MLPs with their own random weights, scaled so a chain of them stays well conditioned."""
    torch.manual_seed(seed)
    blocks = []
    for _ in range(depth):
        fc1, fc2 = nn.Linear(channels, MLP_RATIO * channels), nn.Linear(MLP_RATIO * channels, channels)
        fc2.weight.data.mul_(0.1)
        blocks.append((fc1.requires_grad_(False), fc2.requires_grad_(False)))
    return blocks


def packed_chain(blocks: list[tuple[nn.Linear, nn.Linear]], side: int, pack: Callable, block: Callable) -> Callable:
    """A chain over ``(1, side, side, C)`` maps that packs each weight once with ``pack`` and runs
    ``block(h, fc1, fc2, w1, w2)`` on the ``(tokens, C)`` view for each MLP."""
    weights = [(pack(fc1.weight), pack(fc2.weight)) for fc1, fc2 in blocks]

    def run(h: torch.Tensor) -> torch.Tensor:
        h = h.reshape(side * side, -1)
        for (fc1, fc2), (w1, w2) in zip(blocks, weights):
            h = block(h, fc1, fc2, w1, w2)
        return h.view(1, side, side, -1)
    return run


def eager_kernels(blocks: list[tuple[nn.Linear, nn.Linear]], side: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Chains over ``(1, side, side, C)`` channels-last maps, one per kernel; each returns a ``(1, side, side, C)`` map."""
    tokens = side * side
    fused = FusedBlock()
    mkldnn, mkl = torch.ops.mkldnn, torch.ops.mkl

    def ours(h):
        for fc1, fc2 in blocks:
            h = fused.add_mlp(h, h, fc1, fc2)
        return h

    def mkl_addmm(h, fc1, fc2, w1, w2):
        return torch.addmm(h, F.gelu(F.linear(h, fc1.weight, fc1.bias)), w2).add_(fc2.bias)

    def mkl_packed(h, fc1, fc2, w1, w2):
        hidden = F.gelu(mkl._mkl_linear(h, w1, fc1.weight, fc1.bias, tokens))
        return mkl._mkl_linear(hidden, w2, fc2.weight, fc2.bias, tokens).add_(h)

    def onednn_linear(h, fc1, fc2, w1, w2):
        hidden = mkldnn._linear_pointwise(h, w1, fc1.bias, "gelu", [], "none")
        return mkldnn._linear_pointwise.binary(hidden, h, w2, fc2.bias, "add")

    return {
        "ours": ours,
        "mkl addmm": packed_chain(blocks, side, lambda w: w.t(), mkl_addmm),
        "mkl packed": packed_chain(blocks, side, lambda w: mkl._mkl_reorder_linear_weight(w, tokens), mkl_packed),
        "onednn linear": packed_chain(blocks, side, lambda w: mkldnn._reorder_linear_weight(w, tokens), onednn_linear),
    }


def onnxruntime_chain(blocks: list[tuple[nn.Linear, nn.Linear]], side: int, threads: int) -> Callable | None:
    """The chain as an ONNX Runtime session on NCHW arrays, called on a channels-last map; None without onnxruntime."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    nodes, weights, previous = [], [], "x"
    for index, (fc1, fc2) in enumerate(blocks):
        for name, linear in (("fc1", fc1), ("fc2", fc2)):
            weights.append(numpy_helper.from_array(linear.weight.numpy()[:, :, None, None], f"{name}_w{index}"))
            weights.append(numpy_helper.from_array(linear.bias.numpy(), f"{name}_b{index}"))
        nodes += [
            helper.make_node("Conv", [previous, f"fc1_w{index}", f"fc1_b{index}"], [f"a{index}"]),
            helper.make_node("Gelu", [f"a{index}"], [f"g{index}"]),
            helper.make_node("Conv", [f"g{index}", f"fc2_w{index}", f"fc2_b{index}"], [f"m{index}"]),
            helper.make_node("Add", [previous, f"m{index}"], [f"h{index}"]),
        ]
        previous = f"h{index}"
    channels = blocks[0][0].in_features
    graph = helper.make_graph(nodes, "mlp_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)], weights)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString(),
                                           options, providers=["CPUExecutionProvider"])

    def run(h: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {"x": np.ascontiguousarray(h.permute(0, 3, 1, 2).numpy())})
        return torch.from_numpy(out).permute(0, 2, 3, 1)
    return run


def bench_stage(side: int, channels: int, depth: int, threads: int, rounds: int, iters: int) -> dict[str, float]:
    blocks = mlp_blocks(channels, depth)
    kernels = eager_kernels(blocks, side)
    ort = onnxruntime_chain(blocks, side, threads)
    if ort is not None:
        kernels["onnxruntime"] = ort
    x = torch.randn(1, side, side, channels)
    with torch.inference_mode():
        reference = kernels["ours"](x)
        for label, fn in kernels.items():
            error = ((fn(x) - reference).abs().max() / reference.abs().max()).item()
            assert error < 1e-5, f"{label} differs from ours by {error:.2e} (relative)"
            for _ in range(3):
                fn(x)
        samples: dict[str, list[float]] = {label: [] for label in kernels}
        for round_index in range(rounds):
            for label in (list(kernels) if round_index % 2 == 0 else list(reversed(kernels))):
                samples[label].append(time_call(kernels[label], x, iters))
    return {label: statistics.median(values) for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of: {', '.join(STAGES)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = tune_malloc()
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.rounds} interleaved rounds x "
          f"{args.iters} calls, {describe_allocator(tuned)}")
    for label in args.stages.split(","):
        side, channels, depth = STAGES[label]
        gflop = depth * 2 * 2 * side * side * channels * MLP_RATIO * channels / 1e9
        ms = bench_stage(side, channels, depth, args.threads, args.rounds, args.iters)
        print(f"\n{label}: {depth} MLPs on {side}x{side} tokens, {channels} -> {MLP_RATIO * channels} -> {channels}, "
              f"{gflop:.2f} GFLOP\n| kernel | ms | GFLOP/s | vs ours |\n|---|---:|---:|---:|")
        for kernel, value in ms.items():
            print(f"| {kernel} | {value:.2f} | {gflop / value * 1e3:.0f} | {ms['ours'] / value:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
