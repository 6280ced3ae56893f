"""ExecuTorch ``.pte`` programs lowered to the XNNPACK delegate: fp32, int8 by PT2E with the XNNPACK quantizer
(the rule of :mod:`swiftformer.pt2e`, shared with ``train --qat``), and the one method every caller runs a program
through."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import SwiftFormerError
from ..pt2e import int8_quantizer
from .app_io import AppMetadata, ImageClassifier
from .graph import Run, batch_dim, contiguous_copy, exported_program
from .quiet import PYTREE_LOGGER, quiet

# Images per calibration call of a PT2E model: its observers cost about as much per call at batch 1 as at 32 (256
# photos at batch 1 took 20 s of an ExecuTorch XS export at 32 px)
PT2E_CALIBRATION_BATCH = 32
# XNNPACK's thread pool reads the CPU's cores on first use and logs every file it could not read (ARM-only files
# on x86, a container's core count): five lines on every load, none of them about the model.
CPUINFO_LINES = re.compile(r"^\[cpuinfo_utils\.cpp:\d+\]")


def write(fused: nn.Module, example: torch.Tensor, out: Path, precision: str = "fp32",
          calibration: torch.Tensor | None = None, dynamic_batch: bool = False,
          constant_methods: dict | None = None) -> Path:
    """``fused`` lowered to XNNPACK as a ``.pte``; int8: PT2E-quantized on ``calibration`` first; ``constant_methods``:
    methods of the program that return those values."""
    try:
        with quiet(loggers=(PYTREE_LOGGER,)):
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except ImportError as error:
        raise SwiftFormerError(f"ExecuTorch export needs the executorch package ({error})") from None
    model = contiguous_copy(fused)
    if precision == "int8":
        model = pt2e_calibrated(model, int8_quantizer(qat=False), calibration)
    program = exported_program(model, example, dynamic_batch)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=constant_methods)
    out.write_bytes(lowered.to_executorch().buffer)
    return out


def write_image(form: ImageClassifier, example: torch.Tensor, out: Path, meta: AppMetadata, precision: str = "fp32",
                calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """The image form (uint8 NHWC pixels, as an Android bitmap or camera frame gives them, in; probabilities out),
    int8 calibrated on uint8 pixels; ``meta`` as constant methods an app calls (:data:`APP_METHODS`), the labels one
    newline-joined string (Java's ``EValue`` has no string list)."""
    strings = meta.as_strings()
    constants = {"input_size": list(meta.input_size), "layout": meta.layout, "mean": list(meta.mean),
                 "std": list(meta.std), **{key: strings[key] for key in APP_STRINGS}}
    return write(form, example, out, precision, calibration, dynamic_batch, constants)


# The metadata's fields kept as string methods of an image-form program (besides input_size, layout, mean, std)
APP_STRINGS = ("labels", "name", "variant", "swiftformer_version", "pixel_max", "top1", "author", "license",
               "description")


def read_app_metadata(path: Path) -> AppMetadata | None:
    """The :class:`AppMetadata` kept in a program's constant methods (``None``: a tensor-form program)."""
    program = _program(path)
    if "labels" not in program.method_names:
        return None

    def value(name: str) -> list:
        return program.load_method(name).execute([])

    strings = {key: value(key)[0] for key in APP_STRINGS}
    numbers = {key: ",".join(map(str, value(key))) for key in ("input_size", "mean", "std")}
    return AppMetadata.from_strings({**strings, **numbers, "layout": value("layout")[0]})


def pt2e_calibrated(model: nn.Module, quantizer: object, calibration: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` captured, prepared by ``quantizer``, observed on every ``calibration`` image and converted.

    Captured with a batch dimension of its own, whatever the artefact's, so the photos go
    :data:`PT2E_CALIBRATION_BATCH` at a time; the caller exports the result again at the artefact's shape."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = calibration[:1].expand(2, -1, -1, -1).contiguous()  # batch 1 would be specialised to a constant
    captured = torch.export.export(model, (example,), dynamic_shapes=batch_dim(True)).module()
    prepared = prepare_pt2e(captured, quantizer)
    for part in calibration.split(PT2E_CALIBRATION_BATCH):
        prepared(part.contiguous())
    return convert_pt2e(prepared)


def stored_precision(path: Path) -> None:
    """A program does not say (its delegate blob holds the kernels)."""
    return None


def _method(path: Path, threads: int | None = None) -> object:
    """The program's ``forward``, loaded by the ExecuTorch runtime; ``threads``: XNNPACK's thread pool resized to
    that many (process-wide), else left as it is (one thread per performance core)."""
    if threads:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(threads)
    program = _program(path)
    with quiet(lines=CPUINFO_LINES):
        return program.load_method("forward")


def _program(path: Path) -> object:
    """The ``.pte`` loaded by the ExecuTorch runtime (its methods not yet)."""
    with quiet(loggers=(PYTREE_LOGGER,)):
        from executorch.runtime import Runtime
    with quiet(lines=CPUINFO_LINES):
        return Runtime.get().load_program(str(path))


def max_batch(path: Path) -> int:
    """The largest batch a ``.pte`` takes: its input's memory is planned for that many images. Lowering can narrow
    a dynamic batch below the one exported (torch 2.14: a 1x1 convolution's backend choice guards batch < 16)."""
    return int(_method(path).metadata.input_tensor_meta(0).sizes()[0])


def runner(path: Path, threads: int | None = None, precision: str = "fp32") -> Run:
    """Images to logits through the program's ``forward`` (``precision``: the program holds its own)."""
    method = _method(path, threads)
    return lambda x: method.execute([x.contiguous()])[0]
