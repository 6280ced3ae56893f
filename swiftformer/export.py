"""Export the fused (reparameterized) model to deployment formats, and check every artefact.

    swiftformer export --model swiftformer_s --format onnx --out s.onnx --dynamic-batch

Each format is written from the fused form (:func:`swiftformer.reparameterize`), then loaded back by its
own runtime and compared with PyTorch on the same inputs: ONNX through ONNX Runtime, OpenVINO IR (converted
from that ONNX graph) through the OpenVINO CPU plugin, TorchScript through ``torch.jit.load``, ExecuTorch by
running the ``.pte`` (XNNPACK delegate) with the ExecuTorch runtime, Core ML by reading the ``.mlpackage`` back,
validating its spec and MIL program, and predicting where Core ML runs (macOS only).

The ``write_*`` functions only write an artefact; ``swiftformer bench`` uses them to run the same graphs.
"""
from __future__ import annotations

import copy
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import check_destination
from .data_config import check_image_size
from .errors import SwiftFormerError
from .models.fused import FusedModel, reparameterize, set_layout

if TYPE_CHECKING:
    import openvino

FORMATS = ("onnx", "openvino", "coreml", "torchscript", "executorch")
SUFFIXES = {
    "onnx": ".onnx", "openvino": ".xml", "coreml": ".mlpackage", "torchscript": ".pt", "executorch": ".pte",
}
# Upper bound of the batch dimension of a --dynamic-batch export (ExecuTorch and Core ML need one).
MAX_DYNAMIC_BATCH = 64
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Feature-map layout of the fused graph per format. Formats without strides (ONNX, OpenVINO IR, Core ML's MIL)
# would turn every channels-last view into a real transpose: they get NCHW maps (ONNX Runtime: 10-23 % faster at
# batch 1, README). PyTorch (TorchScript) and XNNPACK (ExecuTorch, NHWC natively) run the channels-last form best.
CHANNELS_LAST = {"onnx": False, "openvino": False, "coreml": False, "torchscript": True, "executorch": True}


class ExportCheckError(SwiftFormerError):
    """An exported artefact that is malformed or whose outputs differ from PyTorch's beyond the tolerance."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well it matched PyTorch."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_abs_diff: float | None  # None when the artefact could not be run on this machine
    note: str = ""


def check_inputs(batch: int, img_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Seeded images in the normalised input distribution (zero mean, unit variance per channel)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *img_size, generator=generator)


def _contiguous_copy(fused: nn.Module) -> nn.Module:
    """The fused model with NCHW-contiguous weights: XNNPACK's layout pass rejects channels-last constants."""
    return copy.deepcopy(fused).to(memory_format=torch.contiguous_format)


def _batch_dim(dynamic_batch: bool) -> dict | None:
    if not dynamic_batch:
        return None
    return {"x": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}


def _export_program(fused: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> torch.export.ExportedProgram:
    return torch.export.export(fused, (example,), dynamic_shapes=_batch_dim(dynamic_batch))


def write_onnx(model: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool = False) -> Path:
    """``model`` at ``example``'s shape as ONNX (the dynamo exporter, optimised), checked by the ONNX checker."""
    import onnx

    torch.onnx.export(
        model, (example,), str(out), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes=_batch_dim(dynamic_batch), optimize=True, verbose=False, external_data=False,
    )
    onnx.checker.check_model(str(out), full_check=True)
    return out


def _export_onnx(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    import onnxruntime as ort

    session = ort.InferenceSession(str(write_onnx(fused, example, out, dynamic_batch)), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])


def _openvino():
    try:
        import openvino
    except ImportError as error:
        raise SwiftFormerError(f"OpenVINO export needs the openvino package: pip install 'swiftformer[export]' ({error})") from None
    return openvino


def write_openvino(onnx_path: Path, out: Path, dynamic_batch: bool = False) -> Path:
    """The ONNX graph as OpenVINO IR (``out`` = ``.xml``, weights beside it in ``.bin``), weights kept in fp32.

    A dynamic batch is bounded to 1..:data:`MAX_DYNAMIC_BATCH` like the other formats.
    """
    ov = _openvino()
    model = ov.convert_model(str(onnx_path))
    if dynamic_batch:
        shape = model.input(0).get_partial_shape()
        shape[0] = ov.Dimension(1, MAX_DYNAMIC_BATCH)
        model.reshape({model.input(0): shape})
    ov.save_model(model, str(out), compress_to_fp16=False)  # the default would halve the weights to fp16
    return out


def compile_openvino(path: Path, threads: int | None = None) -> openvino.CompiledModel:
    """The IR compiled for this CPU in fp32 (not the bf16 the plugin picks on CPUs with native bf16)."""
    ov = _openvino()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), "CPU", config)


def _export_openvino(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    with tempfile.TemporaryDirectory() as tmp:
        write_openvino(write_onnx(fused, example, Path(tmp) / "model.onnx", dynamic_batch), out, dynamic_batch)
    compiled = compile_openvino(out)
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def _export_torchscript(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    # Tracing records ``x.shape`` reads as size ops, so a traced graph takes any batch size.
    traced = torch.jit.trace(fused, example, check_trace=False)
    traced.save(str(out))
    loaded = torch.jit.load(str(out)).eval()
    return lambda x: loaded(x)


def write_executorch(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool = False) -> Path:
    """``fused`` lowered to the XNNPACK delegate as an ExecuTorch ``.pte`` program."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as error:
        raise SwiftFormerError(f"ExecuTorch export needs the executorch package ({error})") from None
    program = _export_program(_contiguous_copy(fused), example, dynamic_batch)
    out.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return out


def _export_executorch(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(write_executorch(fused, example, out, dynamic_batch))).load_method("forward")
    return lambda x: method.execute([x.contiguous()])[0]


def _validate_mlpackage(path: Path, input_shape: tuple[int, ...], dynamic_batch: bool) -> object:
    """Read the package back, check its type, inputs and outputs, and rebuild its MIL program (type inference)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ExportCheckError(f"{path} is a {spec.WhichOneof('Type')}, not an mlprogram")
    inputs = {i.name: i for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    if list(inputs) != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportCheckError(f"{path} has inputs {list(inputs)} and outputs {outputs}")
    array = inputs[INPUT_NAME].type.multiArrayType
    if dynamic_batch:
        ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
        expected = [(1, MAX_DYNAMIC_BATCH)] + [(size, size) for size in input_shape[1:]]
    else:
        ranges, expected = list(array.shape), list(input_shape)
    if ranges != expected:
        raise ExportCheckError(f"{path} takes input sizes {ranges}, expected {expected}")
    milproto_load(spec, spec.specificationVersion, model.weights_dir)
    return model


def _export_coreml(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable | None:
    import coremltools as ct

    program = _export_program(fused, example, dynamic_batch).run_decompositions({})
    shape = list(example.shape)
    if dynamic_batch:
        shape[0] = ct.RangeDim(lower_bound=1, upper_bound=MAX_DYNAMIC_BATCH, default=example.shape[0])
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=shape)],
        outputs=[ct.TensorType(name=OUTPUT_NAME)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,  # the check compares fp32; convert again for fp16 on the ANE
        minimum_deployment_target=ct.target.iOS16,
    )
    mlmodel.save(str(out))
    _validate_mlpackage(out, tuple(example.shape), dynamic_batch)
    if sys.platform != "darwin":
        return None
    loaded = ct.models.MLModel(str(out))
    return lambda x: torch.from_numpy(loaded.predict({INPUT_NAME: x.numpy()})[OUTPUT_NAME])


_EXPORTERS = {
    "onnx": _export_onnx, "openvino": _export_openvino, "torchscript": _export_torchscript,
    "executorch": _export_executorch, "coreml": _export_coreml,
}


def check_output(fmt: str, out: str | Path) -> Path:
    """``out`` as a :class:`Path` if ``fmt`` can be written there (its suffix, a writable folder, no folder in the
    way of a file), else a :class:`SwiftFormerError`; cheap, so callers check before loading any weights."""
    if fmt not in FORMATS:
        raise SwiftFormerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix != SUFFIXES[fmt]:
        raise SwiftFormerError(f"--format {fmt} writes a {SUFFIXES[fmt]} file, not {out.name!r}: name --out accordingly")
    for path in _artefact_paths(out, fmt):
        check_destination(path, folder=fmt == "coreml")
    return out


def _artefact_paths(path: Path, fmt: str) -> list[Path]:
    """Every path an artefact occupies: OpenVINO IR is the ``.xml`` and the ``.bin`` beside it."""
    return [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _publish(staging: Path, out: Path, fmt: str) -> None:
    """Move a checked artefact from its staging name onto ``out`` (a Core ML package replaces the old folder)."""
    for source, target in zip(_artefact_paths(staging, fmt), _artefact_paths(out, fmt)):
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(source, target)


@torch.no_grad()
def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    batch: int = 1,
    dynamic_batch: bool = False,
    img_size: tuple[int, int] = (224, 224),
    atol: float = 1e-4,
) -> ExportResult:
    """Fuse ``model``, write it as ``fmt`` to ``out`` and compare the artefact's outputs with PyTorch's.

    With ``dynamic_batch`` the artefact takes 1..:data:`MAX_DYNAMIC_BATCH` images; it is traced at batch 2
    and checked at batch 3, so a batch size baked into the graph is caught. Raises
    :class:`ExportCheckError` when the max abs difference of the logits exceeds ``atol``.
    """
    if batch < 1:
        raise SwiftFormerError(f"--batch must be at least 1, got {batch}")
    check_image_size(*img_size)
    out = check_output(fmt, out)
    # Written under a hidden name beside ``out`` and renamed only once checked: a failed check leaves nothing.
    staging = out.with_name(f".{out.stem}.{secrets.token_hex(4)}{out.suffix}")
    try:
        result = _export_checked(model, fmt, staging, batch, dynamic_batch, img_size, atol)
        _publish(staging, out, fmt)
    except ExportCheckError as error:  # name the file the user asked for, not its staging name
        raise ExportCheckError(str(error).replace(str(staging), str(out))) from None
    finally:
        for path in _artefact_paths(staging, fmt):
            _remove(path)
    result.path = out
    return result


def _export_checked(
    model: nn.Module, fmt: str, out: Path, batch: int, dynamic_batch: bool, img_size: tuple[int, int], atol: float
) -> ExportResult:
    if isinstance(model, FusedModel):
        fused = set_layout(copy.deepcopy(model), CHANNELS_LAST[fmt]).eval()
    else:
        fused = reparameterize(model, channels_last=CHANNELS_LAST[fmt])
    example = check_inputs(2 if dynamic_batch else batch, img_size)
    inputs = check_inputs(3, img_size, seed=1) if dynamic_batch else check_inputs(batch, img_size, seed=1)
    run = _EXPORTERS[fmt](fused, example, out, dynamic_batch)
    result = ExportResult(out, fmt, tuple(example.shape), dynamic_batch, None)
    if run is None:
        result.note = "Core ML prediction needs macOS: the package was converted and its spec validated, not run"
        return result
    expected = fused(inputs)
    got = run(inputs)
    result.max_abs_diff = float((got.float() - expected).abs().max())
    if not np.isfinite(result.max_abs_diff) or result.max_abs_diff > atol:
        raise ExportCheckError(
            f"{fmt} artefact {out} differs from PyTorch by {result.max_abs_diff:.3g} (tolerance {atol:g})"
        )
    return result
