"""Export the fused (reparameterized) model to deployment formats, and check every artefact.

    swiftformer export --model swiftformer_s --format onnx --out s.onnx --dynamic-batch

Each format is written from the fused form (:func:`swiftformer.reparameterize`), then loaded back by its
own runtime and compared with PyTorch on the same inputs: ONNX through ONNX Runtime, OpenVINO IR (converted
from that ONNX graph) through the OpenVINO CPU plugin, TorchScript through ``torch.jit.load``, ExecuTorch by
running the ``.pte`` (XNNPACK delegate) with the ExecuTorch runtime, Core ML by reading the ``.mlpackage`` back,
validating its spec and MIL program, and predicting where Core ML runs (macOS only), LiteRT by running the
``.tflite`` with the ``ai-edge-litert`` interpreter.

``--precision fp16|bf16|int8`` writes the reduced-precision form of a format (:mod:`swiftformer.quantize`,
calibrated on real images: :mod:`swiftformer.calibration`) and checks it against fp32 PyTorch on held-out real
images (:mod:`swiftformer.agreement`); an artefact below the agreement bound is not left under the requested name.
Every artefact gets its preprocessing metadata beside it (:mod:`swiftformer.artefacts`).

The ``write_*`` functions only write an artefact; ``swiftformer bench`` uses them to run the same graphs.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

from .agreement import DEFAULT_MIN_AGREEMENT, Agreement, compare, model_labels
from .artefacts import (
    METADATA_KEY, ArtefactInfo, artefact_info, executorch_max_batch, open_artefact, run_executorch, run_onnx,
    run_openvino, run_torchscript, write_info,
)
from .calibration import ImageBatch
from .checkpoint import check_destination
from .data_config import check_image_size
from .errors import SwiftFormerError
from .formats import CALIBRATED, FORMATS
from .models.fused import FusedModel, reparameterize, set_layout

if TYPE_CHECKING:
    import openvino

log = logging.getLogger(__name__)

# Upper bound of the batch dimension of a --dynamic-batch export (ExecuTorch and Core ML need one).
MAX_DYNAMIC_BATCH = 64
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def channels_last(fmt: str, precision: str = "fp32") -> bool:
    """The feature-map layout of ``fmt``'s fused graph in ``precision`` (``formats.FORMATS``). ExecuTorch int8
    takes the NCHW form, where the 1x1 MLPs are convolutions, which the int8 rule quantizes (and QAT trains): from
    the channels-last form they stay float linears (XS at 224 px: 12.1 MB and no faster than fp32, against 5.0 MB
    and 1.65x; docs/quantization.md)."""
    return FORMATS[fmt].channels_last and not (fmt == "executorch" and precision == "int8")


class ExportCheckError(SwiftFormerError):
    """An exported artefact that is malformed or whose outputs differ from PyTorch's beyond the tolerance."""


class DisagreementError(ExportCheckError):
    """A reduced-precision artefact below the agreement bound, with the measurement that put it there (the CLI
    prints it: on a few check images one disagreement can be the whole shortfall)."""

    def __init__(self, message: str, agreement: Agreement) -> None:
        super().__init__(message)
        self.agreement = agreement


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well it matched PyTorch."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_abs_diff: float | None  # None when the artefact could not be run on this machine
    note: str = ""
    precision: str = "fp32"
    agreement: Agreement | None = None  # reduced precisions: against fp32 PyTorch on held-out real images
    run_as_checked: str = ""  # how to run the artefact as it was checked, where its runtime's default differs
    max_batch: int = MAX_DYNAMIC_BATCH  # of a dynamic batch: what the artefact takes (ExecuTorch's can be fewer)


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
    return run_onnx(write_onnx(fused, example, out, dynamic_batch), threads=None)


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


def compile_openvino(path: Path, threads: int | None = None, precision: str = "fp32") -> openvino.CompiledModel:
    """The IR compiled for this CPU in ``precision`` (fp32 by default, not the bf16 the plugin picks on CPUs with
    native bf16; an int8 IR's float remainder as :func:`~swiftformer.quantize.openvino_hint` says). A warning where
    this CPU cannot compute in that precision: OpenVINO then falls back without a word."""
    from .quantize import openvino_hint

    ov = _openvino()
    hint = openvino_hint(precision)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if (computed := openvino_computes(hint)) != hint:
        part = "the float part of this int8 IR" if precision == "int8" else f"this {precision} IR"
        log.warning("%s: OpenVINO has no %s kernels for this CPU and computes %s in %s, so what it gives "
                    "here is not what it gives on a CPU that has them: measure it on such a CPU", path.name, hint, part,
                    computed)
    return ov.Core().compile_model(str(path), "CPU", config)


@functools.cache
def openvino_computes(hint: str) -> str:
    """The precision OpenVINO's CPU plugin computes in when asked for ``hint`` here: ``hint`` where this CPU has
    kernels for it, else the plugin's fallback (f32 on AVX2; bf16 for f16 on AVX-512 without FP16). Asked of a
    one-operation model, as the fallback does not depend on the model."""
    ov = _openvino()
    from openvino import opset13

    image = opset13.parameter([1, 4], np.float32)
    probe = ov.Model([opset13.matmul(image, opset13.constant(np.ones((4, 1), np.float32)), False, False)], [image])
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def openvino_run_as_checked(precision: str) -> str:
    """How to compile an IR as the check ran it, if this CPU's OpenVINO default differs: on CPUs with native bf16 the
    plugin compiles every IR (fp32 and int8 too) in bf16, and it does not read the hint kept in the IR."""
    from .quantize import openvino_hint

    default = _openvino().Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    checked = openvino_computes(openvino_hint(precision))
    if default == checked:
        return ""
    return (f"checked in {checked}; OpenVINO compiles it in {default} on this CPU unless told: compile_model(model, "
            f"'CPU', {{'INFERENCE_PRECISION_HINT': '{checked}'}}) (swiftformer eval/predict/bench do)")


def _export_openvino(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    with tempfile.TemporaryDirectory() as tmp:
        write_openvino(write_onnx(fused, example, Path(tmp) / "model.onnx", dynamic_batch), out, dynamic_batch)
    return run_openvino(out, threads=None, precision="fp32")


def _export_torchscript(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    # Tracing records ``x.shape`` reads as size ops, so a traced graph takes any batch size.
    traced = torch.jit.trace(fused, example, check_trace=False)
    traced.save(str(out))
    return run_torchscript(out)


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
    return run_executorch(write_executorch(fused, example, out, dynamic_batch))


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


def _export_coreml(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool,
                   precision: str = "fp32") -> Callable | None:
    """fp32 by default; fp16 compute precision, or int8 weights with fp16 compute (:mod:`swiftformer.quantize`)."""
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
        # fp32 unless asked: the check compares fp32 (the Neural Engine runs fp16: --precision fp16)
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        minimum_deployment_target=ct.target.iOS16,
    )
    if precision == "int8":
        from .quantize import coreml_int8_weights

        mlmodel = coreml_int8_weights(mlmodel)
    mlmodel.save(str(out))
    _validate_mlpackage(out, tuple(example.shape), dynamic_batch)
    if sys.platform != "darwin":
        return None
    loaded = ct.models.MLModel(str(out))
    return lambda x: torch.from_numpy(loaded.predict({INPUT_NAME: x.numpy()})[OUTPUT_NAME])


def _export_litert(fused: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool) -> Callable:
    from .artefacts import run_litert
    from .quantize import litert

    return run_litert(litert(fused, example, out, "fp32", None), None)


_EXPORTERS = {
    "onnx": _export_onnx, "openvino": _export_openvino, "torchscript": _export_torchscript,
    "executorch": _export_executorch, "coreml": _export_coreml, "litert": _export_litert,
}


def check_request(
    fmt: str, precision: str, has_calibration: bool, has_check: bool, dynamic_batch: bool = False,
) -> None:
    """A :class:`SwiftFormerError` for a format/precision pair that cannot be written or checked; cheap, so the CLI
    asks before any weights are fetched."""
    from .quantize import check_precision

    if fmt not in FORMATS:
        raise SwiftFormerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "litert" and dynamic_batch:
        raise SwiftFormerError("--format litert writes a fixed batch: drop --dynamic-batch (use --batch N)")
    check_precision(fmt, precision)
    if (fmt, precision) in CALIBRATED and not has_calibration:
        raise SwiftFormerError(f"--precision {precision} calibrates activation ranges on real images: "
                               "give them with --calibration DIR (never random tensors)")
    if precision != "fp32" and fmt != "coreml" and not has_check:
        raise SwiftFormerError(f"--precision {precision} is checked on real images: give --calibration DIR or --check-data DIR")


def check_output(fmt: str, out: str | Path) -> Path:
    """``out`` as a :class:`Path` if ``fmt`` can be written there (its suffix, a writable folder, no folder in the
    way of a file), else a :class:`SwiftFormerError`; cheap, so callers check before loading any weights."""
    if fmt not in FORMATS:
        raise SwiftFormerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    suffix = FORMATS[fmt].suffix
    if out.suffix != suffix:
        raise SwiftFormerError(f"--format {fmt} writes a {suffix} file, not {out.name!r}: name --out accordingly")
    for path in _artefact_paths(out, fmt):
        check_destination(path, folder=fmt == "coreml")
    return out


def _artefact_paths(path: Path, fmt: str) -> list[Path]:
    """Every path an artefact occupies: OpenVINO IR is the ``.xml`` and the ``.bin`` beside it."""
    return [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]


def write_reduced(fused: nn.Module, fmt: str, precision: str, example: torch.Tensor, out: Path,
                  calibration: torch.Tensor | None, dynamic_batch: bool = False) -> Path:
    """Write the ``precision`` form of ``fmt`` (:mod:`swiftformer.quantize`) to ``out``, unchecked: what
    :func:`export_model` checks and ``swiftformer bench`` times."""
    from . import quantize

    if fmt == "coreml":
        _export_coreml(fused, example, out, dynamic_batch, precision)
    elif fmt == "executorch":
        quantize.executorch_int8(fused, example, out, calibration, dynamic_batch)
    elif fmt == "litert":
        quantize.litert(fused, example, out, precision, calibration)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = write_onnx(fused, example, Path(tmp) / "fp32.onnx", dynamic_batch)
            if fmt == "onnx":
                quantize.onnx_int8(fp32, out, calibration, example.shape[0])
            else:
                quantize.openvino_reduced(fp32, out, precision, calibration, dynamic_batch, example.shape[0])
    return out


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A path to write ``out`` (and its companions: ``.bin``, metadata) to, moved beside ``out`` only if the
    block succeeds, so a failed or rejected artefact never sits under the requested name."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging / out.name
        for item in staging.iterdir():
            target = out.parent / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _embed_onnx_metadata(path: Path, info: ArtefactInfo) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = next((p for p in model.metadata_props if p.key == METADATA_KEY), None) or model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.save(model, str(path))


def _narrowed_batch(fmt: str, path: Path, dynamic_batch: bool, info: ArtefactInfo, result: ExportResult) -> None:
    """Record the batch range the written artefact really takes, where lowering narrowed it (ExecuTorch)."""
    if fmt == "executorch" and dynamic_batch:
        info.max_batch = result.max_batch = min(MAX_DYNAMIC_BATCH, executorch_max_batch(path))


def check_agreement(fused: nn.Module, path: Path, info: ArtefactInfo, check: ImageBatch,
                    min_agreement: float) -> Agreement:
    """The artefact at ``path`` against ``fused`` (fp32 PyTorch) on ``check``; an error below ``min_agreement``."""
    labels = model_labels(check.labels, check.class_names, info.class_names)
    reference = torch.cat([fused(part) for part in check.images.split(64)])
    agreement = compare(reference, open_artefact(path, info, users_file=False)(check.images), labels)
    if agreement.agreement < min_agreement:
        differ = round((1 - agreement.agreement) * agreement.images)
        raise DisagreementError(
            f"{info.format} {info.precision} artefact agrees with fp32 PyTorch on {100 * agreement.agreement:.2f} % of "
            f"{agreement.images} check images ({differ} differ), below --min-agreement {100 * min_agreement:.2f} %: "
            "not written", agreement)
    return agreement


@torch.no_grad()
def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    batch: int = 1,
    dynamic_batch: bool = False,
    img_size: tuple[int, int] = (224, 224),
    atol: float = 1e-4,
    precision: str = "fp32",
    calibration: ImageBatch | None = None,
    check: ImageBatch | None = None,
    min_agreement: float | None = None,
    class_names: list[str] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> ExportResult:
    """Fuse ``model``, write it as ``fmt`` to ``out`` and compare the artefact's outputs with PyTorch's.

    With ``dynamic_batch`` the artefact takes 1..:data:`MAX_DYNAMIC_BATCH` images; it is traced at batch 2
    and checked at batch 3, so a batch size baked into the graph is caught. Raises
    :class:`ExportCheckError` when the max abs difference of the logits exceeds ``atol``. A reduced
    ``precision`` is calibrated on ``calibration`` (int8) and must agree with fp32 PyTorch on the ``check``
    images on at least ``min_agreement`` of them (default :data:`~swiftformer.agreement.DEFAULT_MIN_AGREEMENT`).
    ``class_names``, ``crop_pct`` and ``interpolation`` go into the artefact's metadata.
    """
    check_request(fmt, precision, calibration is not None, check is not None, dynamic_batch)
    if batch < 1:
        raise SwiftFormerError(f"--batch must be at least 1, got {batch}")
    check_image_size(*img_size)
    out = check_output(fmt, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, FusedModel):
        fused = set_layout(copy.deepcopy(model), channels_last(fmt, precision)).eval()
    else:
        fused = reparameterize(model, channels_last=channels_last(fmt, precision))
    example = check_inputs(2 if dynamic_batch else batch, img_size)
    inputs = check_inputs(3, img_size, seed=1) if dynamic_batch else check_inputs(batch, img_size, seed=1)
    num_classes = fused(example[:1]).shape[1]
    info = artefact_info(
        fused, fmt, precision, img_size, None if dynamic_batch else batch, MAX_DYNAMIC_BATCH,
        class_names or [f"class {i}" for i in range(num_classes)], crop_pct, interpolation,
    )
    info.variant = getattr(model, "variant", info.variant)
    result = ExportResult(out, fmt, tuple(example.shape), dynamic_batch, None, precision=precision)
    with staged_output(out) as staged:
        if precision != "fp32":
            write_reduced(fused, fmt, precision, example, staged, calibration.images if calibration else None,
                           dynamic_batch)
            _narrowed_batch(fmt, staged, dynamic_batch, info, result)
            if fmt == "coreml":
                _validate_mlpackage(staged, tuple(example.shape), dynamic_batch)
                result.note = f"Core ML {precision} runs on macOS only: the package was converted and its spec validated, not run"
            else:
                bound = DEFAULT_MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
                result.agreement = check_agreement(fused, staged, info, check, bound)
        else:
            run = _EXPORTERS[fmt](fused, example, staged, dynamic_batch)
            _narrowed_batch(fmt, staged, dynamic_batch, info, result)
            if run is None:
                result.note = "Core ML prediction needs macOS: the package was converted and its spec validated, not run"
            else:
                result.max_abs_diff = float((run(inputs).float() - fused(inputs)).abs().max())
                if not np.isfinite(result.max_abs_diff) or result.max_abs_diff > atol:
                    raise ExportCheckError(
                        f"{fmt} artefact {out} differs from PyTorch by {result.max_abs_diff:.3g} (tolerance {atol:g})"
                    )
                if check is not None and fmt != "coreml":  # real images given: the fp32 artefact's agreement too
                    result.agreement = check_agreement(fused, staged, info, check, min_agreement or 0.0)
        if fmt == "openvino":
            result.run_as_checked = openvino_run_as_checked(precision)
        if fmt == "onnx":
            _embed_onnx_metadata(staged, info)
        write_info(staged, info)
    return result
