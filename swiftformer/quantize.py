"""Reduced-precision artefacts per runtime, each with that runtime's own toolkit.

``swiftformer export --precision`` writes them from the fused model; :mod:`swiftformer.export` checks each against
fp32 PyTorch on held-out real images (:mod:`swiftformer.agreement`). What each format does:

- ONNX int8: ONNX Runtime static quantization of the convolutions but the stem's (``quant_pre_process``, QDQ,
  per-channel symmetric int8 weights, uint8 activations; 7-bit weights, ``reduce_range``, on CPUs without VNNI,
  whose u8*s8 dot products saturate), the skip path kept in float (:func:`onnx_float_residuals`);
- OpenVINO int8: NNCF post-training quantization of the IR, the stem and the head kept in float (every MatMul on
  CPUs without VNNI, :func:`openvino_float_ops`), activation ranges
  from the calibration images' min/max, no bias correction, the float remainder compiled in bf16 on CPUs with native bf16
  (:func:`openvino_hint`); fp16/bf16: weights stored in that precision in the IR and the compiled inference precision
  (recorded in the IR's ``runtime_options`` and in the artefact's metadata);
- ExecuTorch int8: PT2E with the XNNPACK quantizer (per-channel symmetric; convolutions only, the stem's in
  float), lowered to the XNNPACK delegate;
- Core ML fp16: fp16 compute precision (what the Neural Engine runs); int8: per-channel symmetric int8 weights
  (``coremltools.optimize``), activations in fp16;
- LiteRT (``.tflite``): ``litert-torch`` conversion; int8: that graph quantized by LiteRT's ``ai-edge-quantizer``,
  the convolutions but the stem's (:func:`litert_int8`).

Calibration images are real photos, preprocessed as the model expects (:mod:`swiftformer.calibration`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .cpu import CpuInfo, cpu_info
from .errors import SwiftFormerError
from .formats import FORMATS, PRECISIONS
from .models.fused import FusedStem

if TYPE_CHECKING:
    import onnx

# OpenVINO's name of each compiled inference precision (int8: of its float remainder, openvino_hint).
OPENVINO_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")  # OpenVINO ops whose input 1 is a weight tensor
# ONNX op types that carry weights and have int8 kernels: the candidates (onnx_blocks, the sensitivity script).
ONNX_QUANTIZABLE = ("Conv", "MatMul", "Gemm")
# What ONNX int8 quantizes by default, chosen by measurement (benchmarks/quant_sensitivity.py, docs/quantization.md):
# the convolutions but the stem's (onnx_stem). MatMul/Gemm int8 (the attentions' linears, the head) ran slower than
# fp32 in ONNX Runtime and moved the probabilities more; the stem, on the raw normalised image, moved them most.
ONNX_INT8_OPS = ("Conv",)


def check_precision(fmt: str, precision: str) -> None:
    """A one-line error for a precision ``fmt`` cannot be written in, naming the formats that can."""
    if precision not in PRECISIONS:
        raise SwiftFormerError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    writes = FORMATS[fmt].precisions
    if precision not in writes:
        able = [name for name, spec in FORMATS.items() if precision in spec.precisions]
        raise SwiftFormerError(f"--format {fmt} has no {precision} export ({fmt} writes {', '.join(writes)}); "
                               f"{precision} is written by --format {', '.join(able)}")


def chunks(images: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """``images`` in batches of exactly ``batch`` (the last one dropped if short: calibration only)."""
    for start in range(0, images.shape[0] - batch + 1, batch):
        yield images[start : start + batch]


# ONNX Runtime ----------------------------------------------------------------------------------------------
def onnx_int8(fp32_onnx: Path, out: Path, calibration: torch.Tensor, batch: int,
              nodes_to_quantize: list[str] | None = None, nodes_to_exclude: list[str] | None = None) -> Path:
    """``fp32_onnx`` statically quantized to int8 (QDQ) with ``calibration`` images, ``batch`` at a time.

    Without node lists, the :data:`ONNX_INT8_OPS` but the stem's (:func:`onnx_stem`) are quantized;
    ``nodes_to_exclude=[]`` quantizes every :data:`ONNX_QUANTIZABLE` node.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = (
                {"image": part.contiguous().numpy()} for part in chunks(calibration, batch)
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = onnx_prepared(fp32_onnx, Path(tmp) / "prepared.onnx")
        op_types = ONNX_QUANTIZABLE
        if nodes_to_quantize is None and nodes_to_exclude is None:
            op_types, nodes_to_exclude = ONNX_INT8_OPS, onnx_stem(prepared)
        quantize_static(
            str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=True, reduce_range=not cpu_info().vnni, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=nodes_to_exclude,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    return onnx_float_residuals(out, op_types)


def onnx_float_residuals(path: Path, quantized_ops: tuple[str, ...]) -> Path:
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


def onnx_prepared(fp32_onnx: Path, out: Path) -> Path:
    """``quant_pre_process`` (shape inference, graph optimisation) of ``fp32_onnx``: ONNX Runtime's symbolic shape
    inference where it can follow the graph, ONNX's own where it cannot (it fails on some peers' ``Expand``)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_onnx), str(out))
    except (TypeError, ValueError, RuntimeError):  # the symbolic pass's failure modes on shapes it cannot follow
        quant_pre_process(str(fp32_onnx), str(out), skip_symbolic_shape=True)
    return out


def onnx_stem(onnx_path: Path) -> list[str]:
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


def onnx_blocks(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """The quantizable nodes (:data:`ONNX_QUANTIZABLE`) of a :func:`onnx_prepared` graph (the names ``onnx_int8``
    sees) by block: ``body.1.2.blocks.5``, ``body.0`` (stem), ``body.2`` (head)..., plus ``products``: the
    activation-by-activation MatMuls of the attentions (no weight input), for per-block sensitivity measurements."""
    weights = {init.name for init in graph.initializer}
    pattern = re.compile(r"^(body\.\d+(?:\.\d+\.(?:blocks\.\d+|downsample))?)\.")
    blocks: dict[str, list[str]] = {"products": []}
    current = "body.0"
    for node in graph.node:
        named = [match.group(1) for name in node.input if (match := pattern.match(name))]
        current = named[0] if named else current
        if node.op_type in ONNX_QUANTIZABLE:
            blocks.setdefault(current, []).append(node.name)
            if node.op_type == "MatMul" and not weights & set(node.input):
                blocks["products"].append(node.name)
    return blocks


# OpenVINO --------------------------------------------------------------------------------------------------
def openvino_reduced(fp32_onnx: Path, out: Path, precision: str, calibration: torch.Tensor | None,
                     dynamic_batch: bool, batch: int) -> Path:
    """The IR in ``precision``: NNCF int8 (calibrated; what :func:`openvino_float_ops` names in float), or
    weights stored in fp16 / bf16 (:func:`openvino_bf16_weights`) with an fp16 / bf16 hint."""
    import openvino as ov

    from .export import MAX_DYNAMIC_BATCH

    model = ov.convert_model(str(fp32_onnx))
    if precision == "int8":
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        batches = [part.contiguous().numpy() for part in chunks(calibration, batch)]
        # Activation ranges from the calibration images' overall min/max: NNCF's default, the mean of each batch's
        # min/max, clipped the outliers of trained models' activations (XS: 97.9 -> 99.6 % agreement, mean |dp|
        # 0.0055 -> 0.0010). No bias correction: fitted on the calibration images, it made agreement depend on how
        # many there were (XS: 95.9 % with 64, 99.6 % with 256; without it 99.0-99.4 % from 64 to 512).
        # docs/quantization.md.
        model = nncf.quantize(
            model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(batches), ignored_scope=nncf.IgnoredScope(names=openvino_float_ops(model, cpu_info())),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX, disable_bias_correction=True),
        )
    # A record of the precision the check compiles it in; OpenVINO 2026.4 does not apply it by itself
    # (export.openvino_run_as_checked says so to the user).
    model.set_rt_info(openvino_hint(precision), ["runtime_options", "INFERENCE_PRECISION_HINT"])
    if dynamic_batch:
        shape = model.input(0).get_partial_shape()
        shape[0] = ov.Dimension(1, MAX_DYNAMIC_BATCH)
        model.reshape({model.input(0): shape})
    if precision == "bf16":
        openvino_bf16_weights(model)
    ov.save_model(model, str(out), compress_to_fp16=precision == "fp16")
    return out


def openvino_bf16_weights(model: object) -> None:
    """Store the convolutions' and matrix products' weights in bf16 (each read through a Convert to f32), rounded
    once from fp32: the IR is as small as an fp16 one and a bf16 compile runs exactly these weights. fp16-compressed
    weights, rounded again to bf16 by the plugin, cost trained models agreement (3-epoch L3: 99.9 -> 99.2 %, mean
    |dp| twice as large; docs/quantization.md). Biases stay fp32, as the plugin adds them."""
    import numpy as np
    import openvino as ov
    from openvino import opset13

    converted = {}  # one bf16 copy of a weight its consumers share
    for op in model.get_ordered_ops():
        weights = op.input(1).get_source_output().get_node() if op.get_type_name() in WEIGHTED_OPS else None
        if weights is None or weights.get_type_name() != "Constant" or weights.get_output_element_type(0) != ov.Type.f32:
            continue
        if weights.get_name() not in converted:
            bits = torch.from_numpy(weights.get_data().copy()).bfloat16().view(torch.int16).numpy()
            rounded = ov.Tensor(ov.Type.bf16, weights.get_output_shape(0))
            rounded.data.view(np.int16)[...] = bits
            converted[weights.get_name()] = opset13.convert(ov.op.Constant(rounded), ov.Type.f32).output(0)
        op.input(1).replace_source_output(converted[weights.get_name()])


def openvino_hint(precision: str) -> str:
    """The ``INFERENCE_PRECISION_HINT`` an IR of ``precision`` is compiled (and checked) with on this CPU.

    An int8 IR runs its float remainder (stem, GELU, attention, adds) in bf16 where the CPU has native bf16 and in
    f32 elsewhere: OpenVINO's own default, so a plain ``compile_model`` runs what the export checked. Measured on
    AMX: XS at batch 1 1.31x -> 1.52x fp32 in one interleaved run, agreement within 0.3 points (docs/quantization.md).
    """
    if precision == "int8":
        return "bf16" if cpu_info().bf16 else "f32"
    return OPENVINO_HINT[precision]


def openvino_float_ops(model: object, cpu: CpuInfo) -> list[str]:
    """What NNCF int8 leaves in float in an OpenVINO model for ``cpu``, as the other runtimes do (docs/quantization.md):

    - the stem's convolutions (every Convolution before the first GroupConvolution, as :func:`onnx_stem` finds
      them): on the raw normalised image they moved the probabilities most of any group (XS: 95.4 -> 98.0 %);
    - the head's MatMul (:func:`openvino_head`): it reads the pooled features before the final BN folded into it,
      whose channels span very different ranges under one activation scale (trained L3: 98.4 -> 98.7 %, mean |dp|
      -15 %; ONNX Runtime with the head alone int8: 97.9 %);
    - on CPUs without VNNI, every MatMul (the attentions' linears): OpenVINO's int8 matrix products there ran
      slower than its fp32 ones (AVX2, XS: 2.4 against 1.8 ms per inference), where VNNI and AMX make them faster.
    """
    ops = model.get_ordered_ops()
    first_depthwise = next((i for i, op in enumerate(ops) if op.get_type_name() == "GroupConvolution"), 0)
    stem = [op.get_friendly_name() for op in ops[:first_depthwise] if op.get_type_name() == "Convolution"]
    if not cpu.vnni:
        return [*stem, *(op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul")]
    return [*stem, openvino_head(model)]


def openvino_head(model: object) -> str:
    """The classifier's MatMul: the first one up from the logits (through the bias Add and any reshape)."""
    node = model.output(0).get_node()
    while node.get_type_name() != "MatMul":
        sources = [port.get_source_output().get_node() for port in node.inputs()]
        sources = [source for source in sources if source.get_type_name() != "Constant"]
        if not sources:
            raise ValueError("no MatMul computes the model's output: not a classifier")
        node = sources[0]
    if node.input(1).get_source_output().get_node().get_type_name() != "Constant":
        raise ValueError(f"{node.get_friendly_name()}, the MatMul nearest the output, has no weight tensor")
    return node.get_friendly_name()


# ExecuTorch, and quantization-aware training (swiftformer.qat) ----------------------------------------------
# Images per calibration call of a PT2E model: its observers cost about as much per call at batch 1 as at 32 (256
# photos at batch 1 took 20 s of an ExecuTorch XS export at 32 px)
PT2E_CALIBRATION_BATCH = 32


def pt2e_calibrated(model: nn.Module, quantizer: object, calibration: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` captured, prepared by ``quantizer``, observed on every ``calibration`` image and converted.

    Captured with a batch dimension of its own, whatever the artefact's, so the photos go
    :data:`PT2E_CALIBRATION_BATCH` at a time; the caller exports the result again at the artefact's shape."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .export import _batch_dim

    example = calibration[:1].expand(2, -1, -1, -1).contiguous()  # batch 1 would be specialised to a constant
    captured = torch.export.export(model, (example,), dynamic_shapes=_batch_dim(True)).module()
    prepared = prepare_pt2e(captured, quantizer)
    for part in calibration.split(PT2E_CALIBRATION_BATCH):
        prepared(part.contiguous())
    return convert_pt2e(prepared)


def pt2e_int8_quantizer(qat: bool) -> object:
    """The XNNPACK PT2E quantizer with the int8 rule of every runtime here: convolutions only, per-channel
    symmetric int8 weights, affine int8 activations, the stem's in float (docs/quantization.md: on S, 96.8 % ->
    99.6 % agreement). ``qat``: fake quantization that training steps through (straight-through gradients)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_operator_type(
        torch.ops.aten.conv2d.default, get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))
    return quantizer.set_module_type(FusedStem, None)


def executorch_int8(fused: nn.Module, example: torch.Tensor, out: Path, calibration: torch.Tensor,
                    dynamic_batch: bool) -> Path:
    """PT2E int8 (XNNPACK quantizer: per-channel symmetric weights, affine activations), lowered to XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .export import _batch_dim, _contiguous_copy

    quantized = pt2e_calibrated(_contiguous_copy(fused), pt2e_int8_quantizer(qat=False), calibration)
    program = torch.export.export(quantized, (example,), dynamic_shapes=_batch_dim(dynamic_batch))
    out.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return out


# Core ML ---------------------------------------------------------------------------------------------------
def coreml_int8_weights(mlmodel: object) -> object:
    """Per-channel symmetric int8 weights (``coremltools.optimize``); compute stays fp16."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    )
    import numpy as np

    # an all-zero weight channel gets scale 0, and coremltools' 0 / 0 warns; it dequantizes to the zeros it was
    with np.errstate(divide="ignore", invalid="ignore"):
        return cto.linear_quantize_weights(mlmodel, config)


# LiteRT ----------------------------------------------------------------------------------------------------
# litert-torch's own switch for its progress tree, and TensorFlow's for the C++ INFO lines of its converter
LITERT_QUIET_ENV = {"LITERT_TORCH_SHOW_PROGRESS": "n", "TF_CPP_MIN_LOG_LEVEL": "1"}


@contextlib.contextmanager
def quiet_litert() -> Iterator[None]:
    """One conversion prints ~40 lines of progress and a line per op it lowers through JAX (on the root logger):
    they would bury the export's own result. ``--verbose`` (root logger at DEBUG) keeps them; a setting of the
    user's own environment is kept too."""
    from .runlog import quiet_library

    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    added = [] if verbose else [name for name in LITERT_QUIET_ENV if name not in os.environ]
    os.environ.update({name: LITERT_QUIET_ENV[name] for name in added})
    try:
        with quiet_library(verbose):
            yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _litert_torch():
    try:
        import litert_torch
    except ImportError as error:
        raise SwiftFormerError(
            f"--format litert needs litert-torch ({error}); pip install 'swiftformer[litert]' (through xdsl it pins "
            "typing-extensions<4.13, so pip keeps pydantic<2.12 beside it)"
        ) from None
    return litert_torch


# Ops whose int8 kernels the LiteRT artefact uses: the convolutions (the 1x1 MLPs of the NCHW form among them).
LITERT_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
# litert-torch names each tensor after the modules that produced it: the stem's stays float (onnx_stem's reason)
LITERT_OUTSIDE_STEM = rf"^(?!.*{re.escape(f'{FusedStem.__module__}.{FusedStem.__qualname__}')}_).*$"


def litert_int8(float_tflite: bytes, calibration: torch.Tensor) -> bytes:
    """The fp32 ``.tflite`` quantized by LiteRT's own ``ai-edge-quantizer``: static int8 convolutions but the stem's
    (per-channel symmetric weights), every other op float, activation ranges the calibration images' min/max.

    Not litert-torch's PT2E flow: its converter folds each GELU between two int8 convolutions into an int8 GELU,
    which the XNNPACK delegate does not take, so the graph ran as 21 partitions with the GELUs on the interpreter's
    own kernels (XS at 224 px, batch 1: 1.46x fp32, against 1.85x with the GELUs in float in one partition). And not
    the quantizer's own moving average of each call's min/max: at batch 1 it follows the last few photos (trained XS:
    96.9 % agreement, against 99.4 % with the extremes; docs/quantization.md)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer.utils import qsv_utils

    from .artefacts import padded

    interpreter = Interpreter(model_content=float_tflite)
    signature, spec = next(iter(interpreter.get_signature_list().items()))
    (name,) = spec["inputs"]
    batch = int(interpreter.get_input_details()[0]["shape"][0])
    # the graph's fixed batch; a short last one padded (min/max unchanged)
    samples = [{name: padded(part, batch).contiguous().numpy()} for part in calibration.split(batch)]
    recipe = recipe_manager.RecipeManager()
    for op in LITERT_INT8_OPS:
        recipe.add_static_config(regex=LITERT_OUTSIDE_STEM, operation_name=op, activation_num_bits=8, weight_num_bits=8)
    q = aeq.Quantizer(float_tflite)
    q.load_quantization_recipe(recipe.get_quantization_recipe())
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    with contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
        # profiler-based: min/max gathered by the XNNPACK-delegated run itself (XS at 224 px: 2x faster than keeping
        # every tensor for Python to read, the same ranges)
        ranges = calibrator.Calibrator(float_tflite, num_threads=torch.get_num_threads(),
                                       mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
                                       qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate({signature: samples}, recipe)
        quantized = q.quantize(ranges.get_model_qsvs(), enable_progress_bar=False, enable_progress_report=False)
    return bytes(quantized.quantized_model)


def litert(fused: nn.Module, example: torch.Tensor, out: Path, precision: str,
           calibration: torch.Tensor | None) -> Path:
    """``.tflite`` through litert-torch; int8: that fp32 graph quantized by :func:`litert_int8`."""
    with quiet_litert():  # from the import on: TensorFlow reads its log level as it loads
        float_model = _litert_torch().convert(fused, (example,))
        if precision != "int8":
            float_model.export(str(out))
        else:
            out.write_bytes(litert_int8(float_model.model_content(), calibration))
    return out
