"""Core ML ``.mlpackage`` ML programs through coremltools: fp32, fp16 compute precision (what the Neural Engine
runs), int8 per-channel symmetric weights with fp16 compute (``coremltools.optimize``). Every package is read back
and its spec and MIL program validated; it predicts on macOS only."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SwiftFormerError
from .app_io import AppMetadata, ImageClassifier
from .graph import INPUT_NAME, MAX_DYNAMIC_BATCH, OUTPUT_NAME, ExportCheckError, Run, RuntimeUnavailable, exported_program

LABEL_OUTPUT, PROBABILITIES_OUTPUT = "classLabel", "classLabel_probs"  # coremltools' classifier output names
PREVIEW_TYPE = "com.apple.coreml.model.preview.type"  # Xcode's preview: drop an image, see the classes
METADATA_PREFIX = "swiftformer."  # our AppMetadata.as_strings() in user_defined_metadata


def _compute_precision(precision: str) -> object:
    """fp32 unless asked: the check compares fp32 (the Neural Engine runs fp16: --precision fp16)."""
    import coremltools as ct

    return ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16


def write(fused: nn.Module, example: torch.Tensor, out: Path, precision: str = "fp32",
          calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """``fused`` converted and saved to ``out``, then validated (:func:`validate`); no calibration (int8 weights)."""
    import coremltools as ct

    program = exported_program(fused, example, dynamic_batch).run_decompositions({})
    shape = list(example.shape)
    if dynamic_batch:
        shape[0] = ct.RangeDim(lower_bound=1, upper_bound=MAX_DYNAMIC_BATCH, default=example.shape[0])
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=shape)],
        outputs=[ct.TensorType(name=OUTPUT_NAME)],
        convert_to="mlprogram",
        compute_precision=_compute_precision(precision),
        minimum_deployment_target=ct.target.iOS16,
    )
    if precision == "int8":
        mlmodel = int8_weights(mlmodel)
    mlmodel.save(str(out))
    validate(out, tuple(example.shape), dynamic_batch)
    return out


def write_image(form: ImageClassifier, example: torch.Tensor, out: Path, meta: AppMetadata, precision: str = "fp32",
                calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """The image form (``example``: ``float [1, 3, H, W]`` pixels 0..1, as ``ImageType(scale=1/255)`` hands them
    over) as a classifier package with ``meta`` inside, then validated (:func:`validate_image`). One image at a
    time: Vision feeds one; no calibration (int8 weights)."""
    if dynamic_batch or example.shape[0] != 1:
        raise SwiftFormerError("a Core ML image input takes one image at a time (Vision feeds one): "
                               "drop --dynamic-batch and --batch, or export --io tensor")
    import coremltools as ct

    height, width = meta.input_size
    mlmodel = ct.convert(
        exported_program(form, example, False).run_decompositions({}),
        inputs=[ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=1 / 255,
                             color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(list(meta.labels)),
        convert_to="mlprogram",
        compute_precision=_compute_precision(precision),
        minimum_deployment_target=ct.target.iOS16,
    )
    if precision == "int8":
        mlmodel = int8_weights(mlmodel)
    mlmodel.short_description, mlmodel.author, mlmodel.license = meta.description, meta.author, meta.license
    mlmodel.version = meta.swiftformer_version
    mlmodel.input_description[INPUT_NAME] = f"RGB image {width}x{height} (Vision scales and crops to it)"
    mlmodel.output_description[LABEL_OUTPUT] = "Most likely class"
    mlmodel.output_description[PROBABILITIES_OUTPUT] = "Probability of each class"
    mlmodel.user_defined_metadata.update(
        {PREVIEW_TYPE: "imageClassifier", **{METADATA_PREFIX + k: v for k, v in meta.as_strings().items()}})
    mlmodel.save(str(out))
    validate_image(out, meta)
    return out


def _package(path: Path) -> object:
    import coremltools as ct

    return ct.models.MLModel(str(path), skip_model_load=True)


def read_app_metadata(path: Path) -> AppMetadata | None:
    """The app metadata an image-form package carries in its ``user_defined_metadata`` (``None``: the tensor
    form); read from the spec, so on any platform."""
    stored = _package(path).get_spec().description.metadata.userDefined
    strings = {key[len(METADATA_PREFIX):]: value for key, value in stored.items() if key.startswith(METADATA_PREFIX)}
    return AppMetadata.from_strings(strings) if strings else None


def validate_image(path: Path, meta: AppMetadata) -> object:
    """Read an image-form package back: an RGB image input of ``meta``'s size, the classifier outputs with
    ``meta``'s labels (what Vision's ``VNClassificationObservation`` needs), and its MIL program rebuilt."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = _package(path)
    spec = model.get_spec()
    description = spec.description
    (image,) = description.input
    kind = image.type.WhichOneof("Type")
    if kind != "imageType" or image.type.imageType.colorSpace != ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB:
        raise ExportCheckError(f"{path} takes a {kind} input {image.name!r}, not an RGB image")
    size = (image.type.imageType.height, image.type.imageType.width)
    if size != tuple(meta.input_size):
        raise ExportCheckError(f"{path} takes {size[0]}x{size[1]} images, expected {meta.input_size}")
    if (description.predictedFeatureName, description.predictedProbabilitiesName) != (LABEL_OUTPUT,
                                                                                      PROBABILITIES_OUTPUT):
        raise ExportCheckError(f"{path} is no classifier (predicted feature {description.predictedFeatureName!r})")
    if class_labels(spec) != list(meta.labels):
        raise ExportCheckError(f"{path} names other classes than {list(meta.labels)[:3]}...")
    milproto_load(spec, spec.specificationVersion, model.weights_dir)
    return model


def class_labels(spec: object) -> list[str]:
    """The labels of an ML program's ``classify`` op (what ``classLabel`` answers)."""
    main = spec.mlProgram.functions["main"]
    classify = next(op for op in main.block_specializations[main.opset].operations if op.type == "classify")
    values = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [value.immediateValue.tensor.strings.values[0] for value in values]


def int8_weights(mlmodel: object) -> object:
    """Per-channel symmetric int8 weights (``coremltools.optimize``); compute stays fp16."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    )
    # an all-zero weight channel gets scale 0, and coremltools' 0 / 0 warns; it dequantizes to the zeros it was
    with np.errstate(divide="ignore", invalid="ignore"):
        return cto.linear_quantize_weights(mlmodel, config)


def validate(path: Path, input_shape: tuple[int, ...], dynamic_batch: bool) -> object:
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


def stored_precision(path: Path) -> None:
    """Not read back here (the package's weights and compute precision are not checked against its metadata)."""
    return None


def runner(path: Path, threads: int | None = None, precision: str = "fp32") -> Run:
    """Images to logits through Core ML, on macOS (``threads``: Core ML schedules its own); an image-form package:
    its pixels (``float [N, 3, H, W]``, 0..pixel_max) to probabilities, one image at a time as Vision runs it."""
    if sys.platform != "darwin":
        raise RuntimeUnavailable(f"Core ML {precision} runs on macOS only: the package was converted and its spec "
                                 "validated, not run")
    import coremltools as ct

    loaded = ct.models.MLModel(str(path))
    meta = read_app_metadata(path)
    if meta is None:
        return lambda x: torch.from_numpy(loaded.predict({INPUT_NAME: x.numpy()})[OUTPUT_NAME])

    def run(x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        rgb = (x.float() * (255 / meta.pixel_max)).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        answers = [loaded.predict({INPUT_NAME: Image.fromarray(image.numpy())})[PROBABILITIES_OUTPUT] for image in rgb]
        return torch.tensor([[answer[label] for label in meta.labels] for answer in answers])

    return run


# An image input and several named outputs (the dense models) -----------------------------------------------
def write_image_input(model: nn.Module, size: tuple[int, int], out: Path, output_names: tuple[str, ...],
                      metadata: dict[str, str], description: str = "") -> object:
    """``model``, which takes ``(1, 3, H, W)`` RGB in 0..1, as an fp32 ML program whose input is an RGB
    ``ImageType`` of ``size`` (Core ML scales the 0..255 pixels by 1/255 itself) with one named output per entry of
    ``output_names``, ``metadata`` in its ``user_defined_metadata``; saved and read back (:func:`read_spec`)."""
    import coremltools as ct

    example = torch.rand(1, 3, *size)
    mlmodel = ct.convert(
        exported_program(model, example, False).run_decompositions({}),
        inputs=[ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=1 / 255,
                             color_layout=ct.colorlayout.RGB)],
        outputs=[ct.TensorType(name=name) for name in output_names],
        convert_to="mlprogram", compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16,
    )
    mlmodel.short_description = description
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.save(str(out))
    return read_spec(out)


def read_spec(path: Path) -> object:
    """The package's spec, read back without loading the model (any platform), its MIL program rebuilt."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ExportCheckError(f"{path} is a {spec.WhichOneof('Type')}, not an mlprogram")
    milproto_load(spec, spec.specificationVersion, model.weights_dir)
    return spec


def image_outputs_runner(path: Path, output_names: tuple[str, ...]) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``uint8 (1, H, W, 3)`` RGB pixels to the named outputs through Core ML, on macOS."""
    if sys.platform != "darwin":
        raise RuntimeUnavailable("Core ML runs on macOS only: the package was converted and its spec read back, "
                                 "not run")
    import coremltools as ct
    from PIL import Image

    loaded = ct.models.MLModel(str(path))

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        outputs = loaded.predict({INPUT_NAME: Image.fromarray(x[0].numpy())})
        return [torch.from_numpy(np.asarray(outputs[name])) for name in output_names]

    return run
