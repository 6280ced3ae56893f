"""The artefact formats ``swiftformer export`` writes, one row each: export, quantize, artefacts and bench read
this table, so a format's suffix, precisions and layout are written once."""
from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class ArtefactFormat:
    name: str
    suffix: str
    precisions: tuple[str, ...]  # what its writer produces (swiftformer.quantize)
    # Feature-map layout of its fused graph. Formats without strides (ONNX, OpenVINO IR, Core ML's MIL) would turn
    # every channels-last view into a real transpose: they get NCHW maps (ONNX Runtime: 10-23 % faster at batch 1).
    # PyTorch (TorchScript) and XNNPACK (ExecuTorch, NHWC natively) run the channels-last form best; litert-torch
    # converts NCHW graphs to TFLite's NHWC itself.
    channels_last: bool
    runs_here: bool = True  # eval, predict and bench run it on this machine (Core ML predicts on macOS only)


FORMATS = {fmt.name: fmt for fmt in (
    ArtefactFormat("onnx", ".onnx", ("fp32", "int8"), channels_last=False),
    ArtefactFormat("openvino", ".xml", ("fp32", "fp16", "bf16", "int8"), channels_last=False),
    ArtefactFormat("coreml", ".mlpackage", ("fp32", "fp16", "int8"), channels_last=False, runs_here=False),
    ArtefactFormat("torchscript", ".pt", ("fp32",), channels_last=True),
    ArtefactFormat("executorch", ".pte", ("fp32", "int8"), channels_last=True),
    ArtefactFormat("litert", ".tflite", ("fp32", "int8"), channels_last=False),
)}
# Exports whose writer needs calibration images (activation ranges); Core ML int8 quantizes weights only.
CALIBRATED = {("onnx", "int8"), ("openvino", "int8"), ("executorch", "int8"), ("litert", "int8")}
# suffix -> format, for the artefacts eval, predict and bench run here
RUNNABLE_SUFFIXES = {fmt.suffix: fmt.name for fmt in FORMATS.values() if fmt.runs_here}
