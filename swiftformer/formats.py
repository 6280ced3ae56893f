"""The artefact formats ``swiftformer export`` writes, one row each pointing at its runtime's module
(:mod:`swiftformer.deploy`): export, artefacts and bench read this table, so a format's suffix, precisions, layout
and runtime are written once."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from .deploy import coreml, executorch, litert, onnx, openvino, torchscript
from .errors import SwiftFormerError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class ArtefactFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]  # what its runtime module writes
    # Feature-map layout of its fused graph. Formats without strides (ONNX, OpenVINO IR, Core ML's MIL) would turn
    # every channels-last view into a real transpose: they get NCHW maps (ONNX Runtime: 10-23 % faster at batch 1).
    # PyTorch (TorchScript) and XNNPACK (ExecuTorch, NHWC natively) run the channels-last form best; litert-torch
    # converts NCHW graphs to TFLite's NHWC itself.
    channels_last: bool
    runtime: ModuleType  # writes, reads back and runs it (swiftformer.deploy)
    runs_here: bool = True  # eval, predict and bench run it on this machine (Core ML predicts on macOS only)
    companions: tuple[str, ...] = ()  # suffixes of the files written beside it (OpenVINO's weights: .bin)
    folder: bool = False  # the artefact is a folder (a Core ML package)
    dynamic_batch: bool = True  # it can take any batch of 1..MAX_DYNAMIC_BATCH (a LiteRT graph's is fixed)


FORMATS = {fmt.name: fmt for fmt in (
    ArtefactFormat("onnx", ".onnx", ("fp32", "int8"), channels_last=False, runtime=onnx),
    ArtefactFormat("openvino", ".xml", ("fp32", "fp16", "bf16", "int8"), channels_last=False, runtime=openvino,
                   companions=(".bin",)),
    ArtefactFormat("coreml", ".mlpackage", ("fp32", "fp16", "int8"), channels_last=False, runtime=coreml,
                   runs_here=False, folder=True),
    ArtefactFormat("torchscript", ".pt", ("fp32",), channels_last=True, runtime=torchscript),
    ArtefactFormat("executorch", ".pte", ("fp32", "int8"), channels_last=True, runtime=executorch),
    ArtefactFormat("litert", ".tflite", ("fp32", "int8"), channels_last=False, runtime=litert, dynamic_batch=False),
)}
# Exports whose writer needs calibration images (activation ranges); Core ML int8 quantizes weights only.
CALIBRATED = {("onnx", "int8"), ("openvino", "int8"), ("executorch", "int8"), ("litert", "int8")}
# suffix -> format, for the artefacts eval, predict and bench run here
RUNNABLE_SUFFIXES = {fmt.suffix: fmt.name for fmt in FORMATS.values() if fmt.runs_here}


def check_precision(fmt: str, precision: str) -> None:
    """A one-line error for a precision ``fmt`` cannot be written in, naming the formats that can."""
    if precision not in PRECISIONS:
        raise SwiftFormerError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    writes = FORMATS[fmt].precisions
    if precision not in writes:
        able = [name for name, spec in FORMATS.items() if precision in spec.precisions]
        raise SwiftFormerError(f"--format {fmt} has no {precision} export ({fmt} writes {', '.join(writes)}); "
                               f"{precision} is written by --format {', '.join(able)}")
