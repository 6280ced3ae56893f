"""OpenVINO IR, converted from the ONNX graph: fp32; fp16/bf16 weights stored in that precision with the matching
compiled precision; int8 by NNCF post-training quantization; and the one compiled model every caller runs an IR
through.

int8: the stem and the head kept in float (every MatMul on CPUs without VNNI, :func:`float_ops`), activation ranges
from the calibration images' min/max, no bias correction, the float remainder compiled in bf16 on CPUs with native
bf16 (:func:`hint`). The precision the check compiled in is recorded in the IR's ``runtime_options``.
"""
from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..cpu import CpuInfo, cpu_info
from ..errors import CheckpointError, SwiftFormerError
from . import onnx
from .app_io import AppMetadata, ImageClassifier, image_classifier
from .graph import MAX_DYNAMIC_BATCH, PROBABILITIES_NAME, Run, chunks
from .quiet import quiet

if TYPE_CHECKING:
    import openvino

log = logging.getLogger(__name__)

# OpenVINO's name of each compiled inference precision (int8: of its float remainder, hint).
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")  # ops whose input 1 is a weight tensor


def _openvino():
    try:
        import openvino
    except ImportError as error:
        raise SwiftFormerError(f"OpenVINO export needs the openvino package: pip install 'swiftformer[export]' ({error})") from None
    return openvino


def write(fused: nn.Module, example: torch.Tensor, out: Path, precision: str = "fp32",
          calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """``fused`` as an IR in ``precision`` (``out`` = ``.xml``, weights beside it in ``.bin``), through ONNX."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx.write_fp32(fused, example, Path(tmp) / "model.onnx", dynamic_batch)
        if precision == "fp32":
            return write_ir(fp32, out, dynamic_batch)
        return write_reduced(fp32, out, precision, calibration, dynamic_batch, example.shape[0])


def write_image(form: ImageClassifier, example: torch.Tensor, out: Path, meta: AppMetadata, precision: str = "fp32",
                calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """The image form in ``precision``: u8 NHWC RGB pixels in (OpenVINO's ``PrePostProcessor``: the cast and the
    transpose in the graph), probabilities out; ``meta`` in its ``rt_info`` under ``swiftformer``, the labels also
    under ``model_info/labels`` (OpenVINO Model API's convention, spaces as underscores). The graph is converted
    from a float NCHW 0..255 form and quantized (int8) before the pre-processing is added, so NNCF calibrates on
    the pixels (given as ``form`` takes them) as the float graph sees them."""
    ov = _openvino()
    from openvino.preprocess import ColorFormat, PrePostProcessor

    planar = image_classifier(form.model, "NCHW", form.pixel_max)
    nchw = example.permute(0, 3, 1, 2).float()
    with tempfile.TemporaryDirectory() as tmp:
        model = ov.convert_model(str(onnx.write_fp32(planar, nchw, Path(tmp) / "model.onnx", dynamic_batch,
                                                     PROBABILITIES_NAME)))
    if precision == "int8":
        pixels = calibration.permute(0, 3, 1, 2).float()
        model = _nncf_int8(model, [part.contiguous().numpy() for part in chunks(pixels, example.shape[0])])
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.RGB)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32)
    model = ppp.build()
    for key, value in meta.as_strings().items():
        model.set_rt_info(value, ["swiftformer", key])
    model.set_rt_info(" ".join(label.replace(" ", "_") for label in meta.labels), ["model_info", "labels"])
    model.set_rt_info("Classification", ["model_info", "model_type"])
    return _save(model, out, precision, dynamic_batch)


def read_app_metadata(path: Path) -> AppMetadata | None:
    """The :class:`AppMetadata` :func:`write_image` kept in the IR's ``rt_info`` (``None``: a tensor-form IR)."""
    model = _openvino().Core().read_model(str(path))
    if not model.has_rt_info(["swiftformer", "labels"]):
        return None
    return AppMetadata.from_strings({key: value.astype(str) for key, value in model.get_rt_info()["swiftformer"].items()})


def write_ir(onnx_path: Path, out: Path, dynamic_batch: bool = False) -> Path:
    """The ONNX graph as an IR, weights kept in fp32; a dynamic batch bounded to 1..:data:`MAX_DYNAMIC_BATCH`."""
    ov = _openvino()
    return _save(ov.convert_model(str(onnx_path)), out, "fp32", dynamic_batch)


def _bound_batch(model: openvino.Model, dynamic_batch: bool) -> None:
    if dynamic_batch:
        shape = model.input(0).get_partial_shape()
        shape[0] = _openvino().Dimension(1, MAX_DYNAMIC_BATCH)
        model.reshape({model.input(0): shape})


def write_reduced(fp32_onnx: Path, out: Path, precision: str, calibration: torch.Tensor | None,
                  dynamic_batch: bool, batch: int) -> Path:
    """The IR in ``precision``: NNCF int8 (calibrated; what :func:`float_ops` names in float), or weights stored in
    fp16 / bf16 (:func:`bf16_weights`) with an fp16 / bf16 hint."""
    ov = _openvino()
    model = ov.convert_model(str(fp32_onnx))
    if precision == "int8":
        model = _nncf_int8(model, [part.contiguous().numpy() for part in chunks(calibration, batch)])
    return _save(model, out, precision, dynamic_batch)


def _save(model: openvino.Model, out: Path, precision: str, dynamic_batch: bool) -> Path:
    """``model`` saved as an IR in ``precision``: its weights stored so (fp16 compressed, bf16 rounded, else fp32:
    OpenVINO's default would halve them to fp16), its batch bounded, and the precision the check compiles it in
    recorded (OpenVINO 2026.4 does not apply it by itself: run_as_checked says so to the user)."""
    if precision != "fp32":
        model.set_rt_info(hint(precision), ["runtime_options", "INFERENCE_PRECISION_HINT"])
    _bound_batch(model, dynamic_batch)
    if precision == "bf16":
        bf16_weights(model)
    _openvino().save_model(model, str(out), compress_to_fp16=precision == "fp16")
    return out


def _nncf_int8(model: openvino.Model, batches: list[np.ndarray]) -> openvino.Model:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # Activation ranges from the calibration images' overall min/max: NNCF's default, the mean of each batch's
    # min/max, clipped the outliers of trained models' activations (XS: 97.9 -> 99.6 % agreement, mean |dp|
    # 0.0055 -> 0.0010). No bias correction: fitted on the calibration images, it made agreement depend on how
    # many there were (XS: 95.9 % with 64, 99.6 % with 256; without it 99.0-99.4 % from 64 to 512).
    # docs/quantization.md. Quiet: its backend detection imports torch's C++ extension helpers, which warn "No CUDA
    # runtime is found" on a machine without a GPU; the CPU quantization here builds no extension.
    with quiet(loggers=("torch.utils.cpp_extension",)):
        return nncf.quantize(
            model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=float_ops(model, cpu_info())),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX, disable_bias_correction=True),
        )


def bf16_weights(model: openvino.Model) -> None:
    """Store the convolutions' and matrix products' weights in bf16 (each read through a Convert to f32), rounded
    once from fp32: the IR is as small as an fp16 one and a bf16 compile runs exactly these weights. fp16-compressed
    weights, rounded again to bf16 by the plugin, cost trained models agreement (3-epoch L3: 99.9 -> 99.2 %, mean
    |dp| twice as large; docs/quantization.md). Biases stay fp32, as the plugin adds them."""
    ov = _openvino()
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


def hint(precision: str) -> str:
    """The ``INFERENCE_PRECISION_HINT`` an IR of ``precision`` is compiled (and checked) with on this CPU.

    An int8 IR runs its float remainder (stem, GELU, attention, adds) in bf16 where the CPU has native bf16 and in
    f32 elsewhere: OpenVINO's own default, so a plain ``compile_model`` runs what the export checked. Measured on
    AMX: XS at batch 1 1.31x -> 1.52x fp32 in one interleaved run, agreement within 0.3 points (docs/quantization.md).
    """
    if precision == "int8":
        return "bf16" if cpu_info().bf16 else "f32"
    return HINTS[precision]


def float_ops(model: openvino.Model, cpu: CpuInfo) -> list[str]:
    """What NNCF int8 leaves in float in an OpenVINO model for ``cpu``, as the other runtimes do (docs/quantization.md):

    - the stem's convolutions (every Convolution before the first GroupConvolution, as
      :func:`swiftformer.deploy.onnx.stem_convolutions` finds them): on the raw normalised image they moved the
      probabilities most of any group (XS: 95.4 -> 98.0 %);
    - the head's MatMul (:func:`head`): it reads the pooled features before the final BN folded into it,
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
    return [*stem, head(model)]


def head(model: openvino.Model) -> str:
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


# Reading back ----------------------------------------------------------------------------------------------
def stored_precision(path: Path) -> str:
    """int8 where the IR holds quantize steps; fp16/bf16 where its weights are stored so (:func:`write_reduced`)."""
    text = path.read_text(errors="replace")
    marks = (("int8", 'type="FakeQuantize"'), ("bf16", 'element_type="bf16"'), ("fp16", 'element_type="f16"'))
    return next((precision for precision, mark in marks if mark in text), "fp32")


# Running ---------------------------------------------------------------------------------------------------
def _compiled(model: str | openvino.Model, config: dict) -> openvino.CompiledModel:
    """The one ``compile_model`` of this package, on this CPU."""
    return _openvino().Core().compile_model(model, "CPU", config)


def compiled_model(path: Path, threads: int | None = None, precision: str = "fp32") -> openvino.CompiledModel:
    """The IR compiled for this CPU for latency, in ``precision`` (fp32 by default, not the bf16 the plugin picks on
    CPUs with native bf16; an int8 IR's float remainder as :func:`hint` says), ``threads`` inference threads
    (OpenVINO's default, one per core, without). A warning where this CPU cannot compute in that precision:
    OpenVINO then falls back without a word."""
    asked = hint(precision)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": asked}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if (computed := computes(asked)) != asked:
        part = "the float part of this int8 IR" if precision == "int8" else f"this {precision} IR"
        log.warning("%s: OpenVINO has no %s kernels for this CPU and computes %s in %s, so what it gives "
                    "here is not what it gives on a CPU that has them: measure it on such a CPU", path.name, asked, part,
                    computed)
    return _compiled(str(path), config)


@functools.cache
def computes(asked: str) -> str:
    """The precision OpenVINO's CPU plugin computes in when asked for ``asked`` here: ``asked`` where this CPU has
    kernels for it, else the plugin's fallback (f32 on AVX2; bf16 for f16 on AVX-512 without FP16). Asked of a
    one-operation model, as the fallback does not depend on the model."""
    ov = _openvino()
    from openvino import opset13

    image = opset13.parameter([1, 4], np.float32)
    probe = ov.Model([opset13.matmul(image, opset13.constant(np.ones((4, 1), np.float32)), False, False)], [image])
    return _compiled(probe, {"INFERENCE_PRECISION_HINT": asked}).get_property("INFERENCE_PRECISION_HINT").to_string()


def run_as_checked(precision: str) -> str:
    """How to compile an IR as the check ran it, if this CPU's OpenVINO default differs: on CPUs with native bf16 the
    plugin compiles every IR (fp32 and int8 too) in bf16, and it does not read the hint kept in the IR."""
    default = _openvino().Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    checked = computes(hint(precision))
    if default == checked:
        return ""
    return (f"checked in {checked}; OpenVINO compiles it in {default} on this CPU unless told: compile_model(model, "
            f"'CPU', {{'INFERENCE_PRECISION_HINT': '{checked}'}}) (swiftformer eval/predict/bench do)")


def runner(path: Path, threads: int | None = None, precision: str = "fp32") -> Run:
    """Images to logits through one infer request of :func:`compiled_model`."""
    if not path.with_suffix(".bin").is_file():
        raise CheckpointError(f"{path}: its weights {path.with_suffix('.bin').name} are not beside it (an OpenVINO IR "
                              "is the .xml and the .bin of the same name)")
    request = compiled_model(path, threads, precision).create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.contiguous().numpy()})[0].copy())


# Several named outputs, metadata in rt_info (the dense models) ---------------------------------------------
def embed_rt_info(path: Path, entries: dict[str, str]) -> None:
    """Keep ``entries`` (string to string) in the IR's ``rt_info``, in place (read back by :func:`rt_info`)."""
    ov = _openvino()
    model = ov.Core().read_model(str(path))
    for key, value in entries.items():
        model.set_rt_info(value, key)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # the IR's weights are read while it is saved
        ov.save_model(model, str(Path(tmp) / path.name), compress_to_fp16=False)
        del model
        for suffix in (".xml", ".bin"):
            (Path(tmp) / path.name).with_suffix(suffix).replace(path.with_suffix(suffix))


def rt_info(path: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """The string ``rt_info`` entries of ``keys`` the IR holds (those it lacks left out)."""
    model = _openvino().Core().read_model(str(path))
    return {key: model.get_rt_info(key).astype(str) for key in keys if model.has_rt_info(key)}


def outputs_runner(path: Path, threads: int | None = None) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """One input to every output of the IR, in order, through one infer request of :func:`compiled_model`."""
    compiled = compiled_model(path, threads)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        results = request.infer({0: x.contiguous().numpy()})
        return [torch.from_numpy(results[output].copy()) for output in compiled.outputs]

    return run
