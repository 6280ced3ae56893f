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

from .graph import INPUT_NAME, MAX_DYNAMIC_BATCH, OUTPUT_NAME, ExportCheckError, Run, RuntimeUnavailable, exported_program


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
        # fp32 unless asked: the check compares fp32 (the Neural Engine runs fp16: --precision fp16)
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        minimum_deployment_target=ct.target.iOS16,
    )
    if precision == "int8":
        mlmodel = int8_weights(mlmodel)
    mlmodel.save(str(out))
    validate(out, tuple(example.shape), dynamic_batch)
    return out


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
    """Images to logits through Core ML, on macOS (``threads``: Core ML schedules its own)."""
    if sys.platform != "darwin":
        raise RuntimeUnavailable(f"Core ML {precision} runs on macOS only: the package was converted and its spec "
                                 "validated, not run")
    import coremltools as ct

    loaded = ct.models.MLModel(str(path))
    return lambda x: torch.from_numpy(loaded.predict({INPUT_NAME: x.numpy()})[OUTPUT_NAME])


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
