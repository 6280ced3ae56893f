"""ONNX, run by ONNX Runtime: the fp32 graph (the dynamo exporter), int8 by ONNX Runtime's static quantization, the
metadata kept inside the model, and the one session every caller runs an ``.onnx`` through.

int8: the convolutions but the stem's (``quant_pre_process``, QDQ, per-channel symmetric int8 weights, uint8
activations; 7-bit weights, ``reduce_range``, on CPUs without VNNI, whose u8*s8 dot products saturate), the skip
path kept in float (:func:`float_residuals`).
"""
from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..cpu import cpu_info
from ..errors import CheckpointError
from .app_io import AppMetadata, ImageClassifier
from .graph import INPUT_NAME, OUTPUT_NAME, PROBABILITIES_NAME, Run, batch_dim, chunks

if TYPE_CHECKING:
    import onnx
    import onnxruntime

APP_PREFIX = "swiftformer."  # metadata_props keys of the image form's AppMetadata: swiftformer.labels, ...

METADATA_KEY = "swiftformer"  # the metadata_props key of the artefact's metadata (swiftformer.artefacts)
# ONNX op types that carry weights and have int8 kernels: the candidates (blocks, the sensitivity script).
QUANTIZABLE = ("Conv", "MatMul", "Gemm")
# What int8 quantizes by default, chosen by measurement (benchmarks/quant_sensitivity.py, docs/quantization.md):
# the convolutions but the stem's (stem_convolutions). MatMul/Gemm int8 (the attentions' linears, the head) ran slower
# than fp32 in ONNX Runtime and moved the probabilities more; the stem, on the raw normalised image, moved them most.
INT8_OPS = ("Conv",)
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def write(fused: nn.Module, example: torch.Tensor, out: Path, precision: str = "fp32",
          calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """``fused`` at ``example``'s shape as ONNX in ``precision`` (int8: calibrated on ``calibration``)."""
    if precision == "fp32":
        return write_fp32(fused, example, out, dynamic_batch)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = write_fp32(fused, example, Path(tmp) / "fp32.onnx", dynamic_batch)
        return write_int8(fp32, out, calibration, example.shape[0])


def write_image(form: ImageClassifier, example: torch.Tensor, out: Path, meta: AppMetadata, precision: str = "fp32",
                calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """The image form (uint8 NHWC pixels in, probabilities out) in ``precision``, with ``meta`` in its
    ``metadata_props`` (``swiftformer.labels`` newline-joined, ...) and ``meta.description`` as its doc string.
    ``example`` and ``calibration`` are pixels; a dynamic batch needs an example of 2 or more (at 1 the exporter
    specialises the batch to 1 without a word)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = write_fp32(form, example, Path(tmp) / "fp32.onnx", dynamic_batch, PROBABILITIES_NAME)
        if precision == "fp32":
            model = onnx.load(str(fp32))
        else:
            model = onnx.load(str(write_int8(fp32, Path(tmp) / "int8.onnx", calibration, example.shape[0])))
    onnx.helper.set_model_props(model, {APP_PREFIX + key: value for key, value in meta.as_strings().items()})
    model.doc_string = meta.description
    onnx.save(model, str(out))
    return out


def read_app_metadata(path: Path) -> AppMetadata | None:
    """The :class:`AppMetadata` :func:`write_image` kept in the model (``None``: a tensor-form model)."""
    props = {p.key[len(APP_PREFIX):]: p.value for p in _model(path).metadata_props if p.key.startswith(APP_PREFIX)}
    return AppMetadata.from_strings(props) if props else None


def write_fp32(model: nn.Module, example: torch.Tensor, out: Path, dynamic_batch: bool = False,
               output_name: str = OUTPUT_NAME) -> Path:
    """``model`` at ``example``'s shape as ONNX (the dynamo exporter, optimised), checked by the ONNX checker."""
    import onnx

    torch.onnx.export(
        model, (example,), str(out), dynamo=True, input_names=[INPUT_NAME], output_names=[output_name],
        dynamic_shapes=batch_dim(dynamic_batch), optimize=True, verbose=False, external_data=False,
    )
    onnx.checker.check_model(str(out), full_check=True)
    return out


# int8 ------------------------------------------------------------------------------------------------------
def write_int8(fp32_onnx: Path, out: Path, calibration: torch.Tensor, batch: int,
               nodes_to_quantize: list[str] | None = None, nodes_to_exclude: list[str] | None = None) -> Path:
    """``fp32_onnx`` statically quantized to int8 (QDQ) with ``calibration`` images, ``batch`` at a time.

    Without node lists, the :data:`INT8_OPS` but the stem's (:func:`stem_convolutions`) are quantized;
    ``nodes_to_exclude=[]`` quantizes every :data:`QUANTIZABLE` node.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = ({INPUT_NAME: part.contiguous().numpy()} for part in chunks(calibration, batch))

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        ready = prepared(fp32_onnx, Path(tmp) / "prepared.onnx")
        op_types = QUANTIZABLE
        if nodes_to_quantize is None and nodes_to_exclude is None:
            op_types, nodes_to_exclude = INT8_OPS, stem_convolutions(ready)
        quantize_static(
            str(ready), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=True, reduce_range=not cpu_info().vnni, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=nodes_to_exclude,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    return float_residuals(out, op_types)


def float_residuals(path: Path, quantized_ops: tuple[str, ...]) -> Path:
    """Give the float consumers of a quantized convolution's input the float tensor again, in place.

    ONNX Runtime's QDQ quantizer quantizes a tensor for all its consumers (``replace_input_of_all_nodes``): the
    input of each block's first convolution is also the block's residual, so the whole skip path was rounded to
    int8 at every block and the error added up (L1: 96.2 % agreement; 99.2 % with the skip path in float, as PyTorch's
    PT2E quantizes). Conv outputs stay quantized for every consumer, so each Conv still runs as an int8 kernel.
    """
    import onnx

    model = onnx.load(str(path))
    producer = {name: node.op_type for node in model.graph.node for name in node.output}
    quantized_from = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    # DequantizeLinear output -> the float tensor its QuantizeLinear read, unless an op of a quantized type made it
    # (by type: a convolution left in float, the stem's, feeds no block's skip path in the graphs quantized here)
    float_of = {
        node.output[0]: quantized_from[node.input[0]] for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in quantized_from
        and producer.get(quantized_from[node.input[0]]) not in quantized_ops
    }
    for node in model.graph.node:
        if node.op_type not in (*quantized_ops, "QuantizeLinear", "DequantizeLinear"):
            inputs = [float_of.get(name, name) for name in node.input]
            del node.input[:]
            node.input.extend(inputs)
    onnx.save(model, str(path))
    return path


def prepared(fp32_onnx: Path, out: Path) -> Path:
    """``quant_pre_process`` (shape inference, graph optimisation) of ``fp32_onnx``: ONNX Runtime's symbolic shape
    inference where it can follow the graph, ONNX's own where it cannot (it fails on some peers' ``Expand``)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_onnx), str(out))
    except (TypeError, ValueError, RuntimeError):  # the symbolic pass's failure modes on shapes it cannot follow
        quant_pre_process(str(fp32_onnx), str(out), skip_symbolic_shape=True)
    return out


def stem_convolutions(onnx_path: Path) -> list[str]:
    """The stem's convolutions: every Conv before the first depthwise (grouped) one, which opens stage 1 of
    SwiftFormer (and of the peers built the same way); none in a graph without grouped convolutions."""
    import onnx

    stem = []
    for node in onnx.load(str(onnx_path)).graph.node:
        if node.op_type == "Conv":
            if any(attr.name == "group" and attr.i > 1 for attr in node.attribute):
                return stem
            stem.append(node.name)
    return []


def blocks(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """The quantizable nodes (:data:`QUANTIZABLE`) of a :func:`prepared` graph (the names :func:`write_int8` sees)
    by block: ``body.1.2.blocks.5``, ``body.0`` (stem), ``body.2`` (head)..., plus ``products``: the
    activation-by-activation MatMuls of the attentions (no weight input), for per-block sensitivity measurements."""
    weights = {init.name for init in graph.initializer}
    pattern = re.compile(r"^(body\.\d+(?:\.\d+\.(?:blocks\.\d+|downsample))?)\.")
    found: dict[str, list[str]] = {"products": []}
    current = "body.0"
    for node in graph.node:
        named = [match.group(1) for name in node.input if (match := pattern.match(name))]
        current = named[0] if named else current
        if node.op_type in QUANTIZABLE:
            found.setdefault(current, []).append(node.name)
            if node.op_type == "MatMul" and not weights & set(node.input):
                found["products"].append(node.name)
    return found


# Reading back ----------------------------------------------------------------------------------------------
def _model(path: Path) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except DecodeError as error:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable ONNX model ({error})") from None


def embed_info(path: Path, text: str) -> None:
    """Keep the artefact's metadata (JSON ``text``) inside the model, under :data:`METADATA_KEY`."""
    import onnx

    model = onnx.load(str(path))
    entry = next((p for p in model.metadata_props if p.key == METADATA_KEY), None) or model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    onnx.save(model, str(path))


def embedded_info(path: Path) -> str | None:
    """The metadata JSON :func:`embed_info` kept inside the model, if any."""
    return {p.key: p.value for p in _model(path).metadata_props}.get(METADATA_KEY)


def stored_precision(path: Path) -> str | None:
    """int8 where the graph holds quantize steps or integer kernels, else fp32."""
    return "int8" if {node.op_type for node in _model(path).graph.node} & QUANTIZED_OPS else "fp32"


# Running ---------------------------------------------------------------------------------------------------
def session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """The one ONNX Runtime session of an ``.onnx`` (export's check, eval, predict, bench): all graph optimisations,
    ``threads`` intra-op threads (ONNX Runtime's default, one per core, without), sequential execution. Idle worker
    threads sleep instead of spinning, so they do not steal the cores of whatever runs next: an int8 session that
    spun made the OpenVINO fp32 runner timed after it 1.45-1.57x slower (docs/quantization.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(path: Path, threads: int | None = None, precision: str = "fp32") -> Run:
    """Images to logits through :func:`session` (``precision``: the graph holds its own)."""
    loaded = session(path, threads)
    name = loaded.get_inputs()[0].name
    return lambda x: torch.from_numpy(loaded.run(None, {name: x.contiguous().numpy()})[0])


def refusals() -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a file or an input it refuses (plain ``Exception`` types of its own)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    return (ort_errors.InvalidArgument, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail,
            ort_errors.NoSuchFile, ort_errors.RuntimeException)


# Several named outputs (the dense models) ------------------------------------------------------------------
def write_outputs(model: nn.Module, example: torch.Tensor, out: Path, output_names: tuple[str, ...],
                  dynamo: bool = True) -> Path:
    """``model`` at ``example``'s shape as ONNX with one named output per entry of ``output_names``, checked by the
    ONNX checker. ``dynamo=False``: the TorchScript-based exporter (opset 17), which follows torchvision's
    detectors (their data-dependent box counts and mask pasting loops) where ``torch.export`` cannot."""
    import onnx

    torch.onnx.export(model, (example,), str(out), dynamo=dynamo, input_names=[INPUT_NAME],
                      output_names=list(output_names), opset_version=None if dynamo else 17, verbose=False,
                      **({"optimize": True, "external_data": False} if dynamo else {}))
    onnx.checker.check_model(str(out), full_check=True)
    return out


def embed_metadata(path: Path, entries: dict[str, str]) -> None:
    """Keep ``entries`` (string to string) in the model's ``metadata_props``, replacing those of the same keys."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def metadata(path: Path) -> dict[str, str]:
    """The model's ``metadata_props``."""
    return {p.key: p.value for p in _model(path).metadata_props}


def outputs_runner(path: Path, threads: int | None = None) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """One input to every output of the model, in order, through :func:`session`."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # its per-run warnings on the shapes of a detector's loops, not errors
    loaded = session(path, threads)
    name = loaded.get_inputs()[0].name
    return lambda x: [torch.from_numpy(array) for array in loaded.run(None, {name: x.contiguous().numpy()})]
