"""The artefact formats ``swiftformer export`` writes, one row each pointing at its runtime's module
(:mod:`swiftformer.deploy`): export, artefacts and bench read this table, so a format's suffix, precisions, layout
and runtime are written once."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from .deploy import coreml, executorch, litert, onnx, openvino, torchscript
from .errors import SwiftFormerError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
IOS = ("image", "tensor")  # what an artefact takes: RGB pixels as its platform delivers them, or normalised tensors


@dataclass(frozen=True)
class ImageInput:
    """The pixels an image-form artefact takes (:mod:`swiftformer.deploy.app_io`), as its platform delivers them."""

    layout: str  # "NHWC" (camera frames, bitmaps) or "NCHW" (Core ML's ImageType)
    dtype: str  # "uint8" or "float32"
    pixel_max: float  # pixel values run 0..pixel_max

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in 0..1 ``(N, 3, H, W)`` (a transform without normalisation) as the pixels this input takes:
        uint8 rounded, float scaled to ``pixel_max``, in its layout."""
        import torch

        values = images.float().clamp(0, 1) * self.pixel_max
        values = values.round().to(torch.uint8) if self.dtype == "uint8" else values
        return values.permute(0, 2, 3, 1).contiguous() if self.layout == "NHWC" else values.contiguous()


CAMERA_BYTES = ImageInput("NHWC", "uint8", 255.0)  # Android camera frames and bitmaps, decoded JPEG/PNG


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
    image_input: ImageInput | None = None  # the pixels its image form takes (None: it has no image form)
    default_io: str = "tensor"  # what `swiftformer export` writes without --io


FORMATS = {fmt.name: fmt for fmt in (
    # Default io: an artefact is finished when an app loads it unchanged (image in, labels out), which is what
    # Core ML, LiteRT and ExecuTorch files exist for, and what ONNX Runtime and OpenVINO apps (edge cameras, decoded
    # uint8 frames) want too; --io tensor keeps the normalised-tensor graph for pipelines that normalise themselves.
    ArtefactFormat("onnx", ".onnx", ("fp32", "int8"), channels_last=False, runtime=onnx,
                   image_input=CAMERA_BYTES, default_io="image"),
    ArtefactFormat("openvino", ".xml", ("fp32", "fp16", "bf16", "int8"), channels_last=False, runtime=openvino,
                   companions=(".bin",), image_input=CAMERA_BYTES, default_io="image"),
    ArtefactFormat("coreml", ".mlpackage", ("fp32", "fp16", "int8"), channels_last=False, runtime=coreml,
                   runs_here=False, folder=True, image_input=ImageInput("NCHW", "float32", 1.0),  # ImageType scale=1/255
                   default_io="image"),
    ArtefactFormat("torchscript", ".pt", ("fp32",), channels_last=True, runtime=torchscript),  # not a mobile artefact
    ArtefactFormat("executorch", ".pte", ("fp32", "int8"), channels_last=True, runtime=executorch,
                   image_input=CAMERA_BYTES, default_io="image"),
    ArtefactFormat("litert", ".tflite", ("fp32", "int8"), channels_last=False, runtime=litert, dynamic_batch=False,
                   image_input=CAMERA_BYTES, default_io="image"),
)}
# Exports whose writer needs calibration images (activation ranges); Core ML int8 quantizes weights only.
CALIBRATED = {("onnx", "int8"), ("openvino", "int8"), ("executorch", "int8"), ("litert", "int8")}
# suffix -> format, for the artefacts eval, predict and bench run here
RUNNABLE_SUFFIXES = {fmt.suffix: fmt.name for fmt in FORMATS.values() if fmt.runs_here}


def check_io(fmt: str, io: str) -> None:
    """A one-line error for an ``io`` that ``fmt`` cannot be written in, naming the formats that can."""
    if io not in IOS:
        raise SwiftFormerError(f"unknown --io {io!r}; choose one of {', '.join(IOS)}")
    if io == "image" and FORMATS[fmt].image_input is None:
        able = [name for name, spec in FORMATS.items() if spec.image_input is not None]
        raise SwiftFormerError(f"--format {fmt} has no image form (it is not an app artefact): use --io tensor; "
                               f"--io image is written by --format {', '.join(able)}")


def check_precision(fmt: str, precision: str) -> None:
    """A one-line error for a precision ``fmt`` cannot be written in, naming the formats that can."""
    if precision not in PRECISIONS:
        raise SwiftFormerError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    writes = FORMATS[fmt].precisions
    if precision not in writes:
        able = [name for name, spec in FORMATS.items() if precision in spec.precisions]
        raise SwiftFormerError(f"--format {fmt} has no {precision} export ({fmt} writes {', '.join(writes)}); "
                               f"{precision} is written by --format {', '.join(able)}")
