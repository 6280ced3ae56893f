"""LiteRT ``.tflite`` models through litert-torch: fp32, int8 by LiteRT's own ``ai-edge-quantizer`` (the
convolutions but the stem's, :func:`write_int8`), and the one interpreter every caller runs a model through.

The image form (:func:`write_image`) takes camera bytes, ``uint8 [N, H, W, 3]`` (what MediaPipe Tasks and the
LiteRT support library feed), answers probabilities, and carries TFLite metadata (:mod:`.tflite_metadata`)."""
from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SwiftFormerError
from ..models.fused import FusedStem
from . import tflite_metadata
from .app_io import AppMetadata, ImageClassifier
from .graph import Run, padded
from .quiet import PYTREE_LOGGER, quiet, verbose

# litert-torch's own switch for its progress tree, and TensorFlow's for the C++ INFO lines of its converter
QUIET_ENV = {"LITERT_TORCH_SHOW_PROGRESS": "n", "TF_CPP_MIN_LOG_LEVEL": "1"}
# Lines the converter and the interpreter write to stderr past those switches: absl's notice before its logging is
# set up, TensorFlow's oneDNN notice (absl logging ignores TF_CPP_MIN_LOG_LEVEL), XNNPACK's on every interpreter
NOISE_LINES = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                         r"|I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on"
                         r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)")
# Ops whose int8 kernels the artefact uses: the convolutions (the 1x1 MLPs of the NCHW form among them).
INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
# litert-torch names each tensor after the modules that produced it: the stem's stays float (as every runtime's)
OUTSIDE_STEM = rf"^(?!.*{re.escape(f'{FusedStem.__module__}.{FusedStem.__qualname__}')}_).*$"


@contextlib.contextmanager
def quiet_conversion() -> Iterator[None]:
    """One conversion prints ~40 lines of progress and a line per op it lowers through JAX (on the root logger):
    they would bury the export's own result. ``--verbose`` (root logger at DEBUG) keeps them; a setting of the
    user's own environment is kept too."""
    from ..runlog import quiet_library

    added = [] if verbose() else [name for name in QUIET_ENV if name not in os.environ]
    os.environ.update({name: QUIET_ENV[name] for name in added})
    try:
        with quiet_library(verbose()), quiet(loggers=(PYTREE_LOGGER,), lines=NOISE_LINES):
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


def write(fused: nn.Module, example: torch.Tensor, out: Path, precision: str = "fp32",
          calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """``.tflite`` through litert-torch (a fixed batch); int8: that fp32 graph quantized by :func:`write_int8`."""
    with quiet_conversion():  # from the import on: TensorFlow reads its log level as it loads
        float_model = _litert_torch().convert(fused, (example,))
        if precision != "int8":
            float_model.export(str(out))
        else:
            out.write_bytes(write_int8(float_model.model_content(), calibration))
    return out


def write_image(form: ImageClassifier, example: torch.Tensor, out: Path, meta: AppMetadata, precision: str = "fp32",
                calibration: torch.Tensor | None = None, dynamic_batch: bool = False) -> Path:
    """The image form as ``.tflite`` with its TFLite metadata (``example``/``calibration``: pixels as the form takes
    them, uint8 NHWC); int8 keeps the uint8 input, its ranges calibrated on the real images' pixels. A fixed batch:
    ``dynamic_batch`` is refused by the export before (the formats row)."""
    with quiet_conversion():
        tflite = _litert_torch().convert(form, (example,)).model_content()
        if precision == "int8":
            tflite = write_int8(tflite, calibration)
    out.write_bytes(tflite_metadata.with_metadata(tflite, meta))
    return out


def read_app_metadata(path: Path) -> AppMetadata | None:
    """The app metadata an image-form ``.tflite`` carries (``None``: the tensor form)."""
    return tflite_metadata.read_app_metadata(Path(path).read_bytes())


def write_int8(float_tflite: bytes, calibration: torch.Tensor) -> bytes:
    """The fp32 ``.tflite`` quantized by LiteRT's own ``ai-edge-quantizer``: static int8 convolutions but the stem's
    (per-channel symmetric weights), every other op float, activation ranges the calibration images' min/max.

    Not litert-torch's PT2E flow: its converter folds each GELU between two int8 convolutions into an int8 GELU,
    which the XNNPACK delegate does not take, so the graph ran as 21 partitions with the GELUs on the interpreter's
    own kernels (XS at 224 px, batch 1: 1.46x fp32, against 1.85x with the GELUs in float in one partition). And not
    the quantizer's own moving average of each call's min/max: at batch 1 it follows the last few photos (trained XS:
    96.9 % agreement, against 99.4 % with the extremes; docs/quantization.md)."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer.utils import qsv_utils

    reader = interpreter(model_content=float_tflite)
    signature, spec = next(iter(reader.get_signature_list().items()))
    (name,) = spec["inputs"]
    batch = int(reader.get_input_details()[0]["shape"][0])
    # the graph's fixed batch; a short last one padded (min/max unchanged)
    samples = [{name: padded(part, batch).contiguous().numpy()} for part in calibration.split(batch)]
    recipe = recipe_manager.RecipeManager()
    for op in INT8_OPS:
        recipe.add_static_config(regex=OUTSIDE_STEM, operation_name=op, activation_num_bits=8, weight_num_bits=8)
    q = aeq.Quantizer(float_tflite)
    q.load_quantization_recipe(recipe.get_quantization_recipe())
    with contextlib.nullcontext() if verbose() else contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
        # profiler-based: min/max gathered by the XNNPACK-delegated run itself (XS at 224 px: 2x faster than keeping
        # every tensor for Python to read, the same ranges)
        ranges = calibrator.Calibrator(float_tflite, num_threads=torch.get_num_threads(),
                                       mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
                                       qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate({signature: samples}, recipe)
        quantized = q.quantize(ranges.get_model_qsvs(), enable_progress_bar=False, enable_progress_report=False)
    return bytes(quantized.quantized_model)


def stored_precision(path: Path) -> str | None:
    """int8 where the model holds int8 tensors (the image form's uint8 input is camera bytes, fp32 or int8 alike;
    ``None`` for a file the interpreter does not read: opening it names the problem)."""
    try:
        tensors = interpreter(model_path=path).get_tensor_details()
    except (ValueError, RuntimeError):
        return None
    return "int8" if any(t["dtype"] == np.int8 for t in tensors) else "fp32"


def interpreter(model_path: Path | None = None, model_content: bytes | None = None,
                threads: int | None = None) -> object:
    """The one ``ai-edge-litert`` interpreter (its XNNPACK delegate) of a file or of the bytes of one, on ``threads``
    threads (two without: the interpreter's own default is one)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise SwiftFormerError(f"running a .tflite needs the ai-edge-litert package ({error})") from None
    with quiet(lines=NOISE_LINES):
        return Interpreter(model_path=None if model_path is None else str(model_path), model_content=model_content,
                           num_threads=threads or 2)


def runner(path: Path, threads: int | None = None, precision: str = "fp32") -> Run:
    """Images to logits through :func:`interpreter` (``precision``: the model holds its own); an image-form model:
    its pixels (uint8 NHWC) to probabilities."""
    model = interpreter(model_path=path, threads=threads)
    with quiet(lines=NOISE_LINES):
        model.allocate_tensors()
    source, target = model.get_input_details()[0], model.get_output_details()[0]

    def run(x: torch.Tensor) -> torch.Tensor:  # pixels decoded as floats are whole numbers: the cast keeps them
        model.set_tensor(source["index"], x.contiguous().numpy().astype(source["dtype"], copy=False))
        model.invoke()
        return torch.from_numpy(model.get_tensor(target["index"]).copy())

    return run
