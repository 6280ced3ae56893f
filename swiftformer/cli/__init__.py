"""``swiftformer`` command line: a thin layer over the library.

Each sub-command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``.
Errors a user can fix (a bad option or number, :class:`swiftformer.SwiftFormerError`, a missing file, a read-only
folder, a full disk) print one line on stderr and exit with code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

# OSErrors that come from the user's files and folders (missing, read-only, full disk, a file where a folder is
# wanted): one line naming the path. Any other OSError keeps its traceback.
USER_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                         errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG})

# Converters and quantizers that log every graph rewrite at INFO (the CLI logs at INFO): hundreds of lines a run.
CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "onnxruntime", "openvino", "coremltools", "executorch", "nncf")

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("swiftformer.cli.info", "parameters, MACs and layout of the SwiftFormer variants"),
    "export": ("swiftformer.cli.export", "the fused model as ONNX, OpenVINO IR, Core ML, TorchScript, ExecuTorch or "
               "LiteRT, in fp32, fp16, bf16 or int8, checked"),
    "bench": ("swiftformer.cli.bench", "latency and throughput beside the mobile peers per backend"),
    "bench-attention": ("swiftformer.cli.bench_attention", "time of each token mixer vs token count, and its scaling exponent"),
    "train": ("swiftformer.cli.train", "train or fine-tune with a recipe (one process, or torchrun for DDP)"),
    "eval": ("swiftformer.cli.eval", "top-1/top-5 and per-class accuracy of a checkpoint"),
    "predict": ("swiftformer.cli.predict", "top-k classes with probabilities for image files or folders"),
    "share": ("swiftformer.cli.share", "a run as a folder timm loads (local-dir:, hf-hub:), with a model card; --push "
              "uploads it"),
    "demo": ("swiftformer.cli.demo", "train, evaluate, fuse, export and time SwiftFormer-XS on the embedded digits"),
    "detect": ("swiftformer.cli.detect",
               "Mask R-CNN on a SwiftFormer FPN: train, eval, predict, export (COCO JSON data)"),
    "segment": ("swiftformer.cli.segment",
                "semantic FPN on a SwiftFormer backbone: train, eval, predict, export (label PNGs)"),
}


def quiet_converters(verbose: bool, uses_nncf: bool = False) -> None:
    """Warnings only from :data:`CHATTY_LOGGERS` unless ``--verbose``. NNCF sets its own logger to INFO when first
    imported, so a command that will use it imports it here first."""
    if verbose:
        return
    if uses_nncf:
        import nncf  # noqa: F401
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line naming the option, raised as :class:`UsageError`.

    argparse prints the whole usage and calls ``sys.exit``; the one line (with a pointer to ``--help``) says what
    is wrong, and ``main`` turns it into exit code 2 like every other user error.
    """

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


class UsageError(Exception):
    """A command line argparse refuses; ``str()`` is the line to print."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="swiftformer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"swiftformer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, parser=sub)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an option unknown to a sub-command is reported with that sub-command's name."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        (getattr(args, "parser", None) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def worker_message(error: Exception) -> str:
    """The error's own line: one raised in a DataLoader worker reaches this process as "Caught ... in DataLoader
    worker process N" followed by the worker's traceback, whose last line holds the message."""
    text = str(error)
    if not text.startswith("Caught ") or "DataLoader worker" not in text.splitlines()[0]:
        return text
    return text.rstrip().splitlines()[-1].split(": ", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that wait at a barrier spin for a while by default, on cores that other work (data-loading
    # workers, other processes) needs: train, eval and bench took 2-5x as long without this on a shared 2-core
    # machine, with or without extra load (benchmarks/bench_omp_wait.py). OpenMP reads it once, when torch loads;
    # a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..allocator import tune_malloc
    from ..errors import SwiftFormerError

    try:
        args = parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    from .. import models  # noqa: F401  torch and timm in memory before malloc is tuned (allocator.tune_malloc)

    tune_malloc()  # freed tensors stay in the process: no page faults on every batch (swiftformer/allocator.py)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.run(args) or 0)
    except SwiftFormerError as error:
        print(f"swiftformer {args.command}: error: {worker_message(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in USER_ERRNOS:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"swiftformer {args.command}: error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"swiftformer {args.command}: interrupted", file=sys.stderr)
        return 130
